import { once } from 'node:events';
import type { Socket } from 'node:net';
import { type ConnectionOptions, connect } from 'node:tls';

/** One HTTP/1.1 answer as it came over the wire. */
export interface RawAnswer {
  status: number;
  /** The status line and headers, through the blank line that ends them. */
  head: string;
  /** The body, as long as the head's Content-Length said (none: empty). */
  body: string;
  /** Where the answer ends in the text it was read from: the mark of the next one. */
  end: number;
}

/**
 * The first final answer at the start of `text` (interim 1xx answers, such as 100 Continue,
 * skipped): undefined while its head or Content-Length body is not all in.
 */
export function completeAnswer(text: string): RawAnswer | undefined {
  let at = 0;
  for (;;) {
    const end = text.indexOf('\r\n\r\n', at);
    if (end < 0) return undefined;
    const head = text.slice(at, end + 4);
    const status = /^HTTP\/1\.1 (\d{3}) /.exec(head);
    if (!status) throw new Error(`not an HTTP/1.1 answer: ${JSON.stringify(text.slice(at))}`);
    at = end + 4;
    if (Number(status[1]) < 200) continue;
    const length = Number(/\r\ncontent-length: *(\d+)\r\n/i.exec(head)?.[1] ?? 0);
    if (text.length - at < length) return undefined;
    return { status: Number(status[1]), head, body: text.slice(at, at + length), end: at + length };
  }
}

/** A connection read as raw text, so the test decides when each byte goes and sees each byte back. */
export interface RawConnection<S extends Socket = Socket> {
  socket: S;
  /** Resolves once the connection has closed (either side, or reset). */
  closed: Promise<void>;
  readonly ended: boolean;
  /** Everything received so far. */
  readonly received: string;
  /** How much has been received so far: a mark for `until` and `answer`. */
  readonly length: number;
  /**
   * Waits until what was received after `from` matches `pattern`; that text. Throws when the
   * connection closes first. Bounded by the test's own timeout.
   */
  until(pattern: RegExp | ((text: string) => boolean), from?: number): Promise<string>;
  /**
   * Waits for a complete final answer received after `from` (see completeAnswer); its `end` is
   * a mark in everything received.
   */
  answer(from?: number): Promise<RawAnswer>;
  /**
   * Writes `next(i)` (i = 0, 1, …) every `everyMs` until the connection closes or the returned
   * function is called: a client that is slow, never idle.
   */
  drip(next: (i: number) => string, everyMs: number): () => void;
}

/** Reads `socket` (connected) as raw text; see RawConnection. */
export function rawConnection<S extends Socket>(socket: S): RawConnection<S> {
  let received = '';
  let ended = false;
  const waiters: Array<() => void> = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    received += chunk;
    wake();
  });
  // a reset ends the connection like a close does: the test looks at what came before it
  socket.on('error', () => {});
  const closed = once(socket, 'close').then(() => {
    ended = true;
    wake();
  });
  const until = async (pattern: RegExp | ((text: string) => boolean), from = 0) => {
    const done = typeof pattern === 'function' ? pattern : (text: string) => pattern.test(text);
    while (!done(received.slice(from))) {
      if (ended)
        throw new Error(
          `the connection closed; received after the mark: ${JSON.stringify(received.slice(from))}`,
        );
      await new Promise<void>((resolve) => waiters.push(resolve));
    }
    return received.slice(from);
  };
  return {
    socket,
    closed,
    get ended() {
      return ended;
    },
    get received() {
      return received;
    },
    get length() {
      return received.length;
    },
    until,
    async answer(from = 0) {
      const answer = completeAnswer(await until((text) => completeAnswer(text) !== undefined, from))!;
      return { ...answer, end: from + answer.end };
    },
    drip(next, everyMs) {
      let i = 0;
      const timer = setInterval(() => {
        if (socket.destroyed || !socket.writable) clearInterval(timer);
        else socket.write(next(i++));
      }, everyMs);
      void closed.then(() => clearInterval(timer));
      return () => clearInterval(timer);
    },
  };
}

/**
 * A TLS connection to `address` (`host:port`) read as raw HTTP/1.1 (rawConnection), once its
 * handshake is done; rejects when the handshake fails.
 */
export async function rawTls(
  options: ConnectionOptions & { address: string },
): Promise<RawConnection<ReturnType<typeof connect>>> {
  const { address, ...tls } = options;
  const colon = address.lastIndexOf(':');
  const socket = connect({ ...tls, host: address.slice(0, colon), port: Number(address.slice(colon + 1)) });
  await once(socket, 'secureConnect');
  return rawConnection(socket);
}

import type { Server as HttpServer, IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Server } from 'node:net';
import { KeyferryError } from '@keyferry/core';
import { ENV_OVERRIDES, parseListen } from '../config/load.ts';

/**
 * Binds a listener to a configured `host:port` (port 0 picks a free one) and answers the
 * address actually bound, as printed and written to listen.json.
 */
export async function listenOn(server: Server, listen: string): Promise<string> {
  const { host, port } = parseListen(listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  return `${host.includes(':') ? `[${host}]` : host}:${bound.port}`;
}

/** The three listeners, by the config key that sets each one's address. */
export const LISTENERS = {
  'api.listen': 'the management API',
  'deviceLink.listen': 'the device-link',
  'gateway.listen': 'the device gateway',
} as const;

/** Why a bind failed, in the words of someone who has to fix it. */
const BIND_FAILURES: Record<string, string> = {
  EADDRINUSE: 'the address is already in use (another keyferryd, or an earlier one still running?)',
  EACCES: 'not allowed to bind it (ports below 1024 need privileges)',
  EADDRNOTAVAIL: 'no interface of this machine has that address',
};

/**
 * Runs `bind` for one listener; a bind that fails because of the address becomes a
 * `config_invalid` refusal naming the setting that chooses it (config key and environment
 * variable), since that is what the operator changes. Other failures pass unchanged.
 */
export async function bindListener<T>(
  setting: keyof typeof LISTENERS,
  listen: string,
  bind: () => Promise<T>,
): Promise<T> {
  try {
    return await bind();
  } catch (err) {
    const why = BIND_FAILURES[(err as NodeJS.ErrnoException).code ?? ''];
    if (why === undefined) throw err;
    const env = Object.entries(ENV_OVERRIDES).find(([, path]) => path.join('.') === setting)?.[0];
    throw new KeyferryError(
      'config_invalid',
      `cannot listen on ${listen} for ${LISTENERS[setting]}: ${why}; stop what holds it, or set ` +
        `${env} (or ${setting} in the config file) to another host:port (port 0 picks a free one)`,
    );
  }
}

/**
 * How long a stopping listener lets the requests in flight finish before it cuts their
 * connections (below the 15 s the primary of several workers waits for each of them).
 */
export const SHUTDOWN_GRACE_MS = 10_000;

/**
 * Stops an HTTP(S) listener the way a restart on a factory line needs: no new connections,
 * idle keep-alive connections closed at once, and each request in flight answered (with
 * `Connection: close`) before its connection closes. What is still open after `graceMs` is cut.
 * Call at start, so that the requests in flight are known; `accepting` is the server that
 * accepts the connections when it is not `server` itself (the gateway's TCP front), and
 * `cutAlso` cuts the connections `server` does not know yet (still in their handshake).
 */
export function drainOnClose(
  server: HttpServer,
  options: { accepting?: Server; graceMs?: number; cutAlso?: () => void } = {},
): { close(): Promise<void> } {
  const { accepting = server, graceMs = SHUTDOWN_GRACE_MS, cutAlso } = options;
  const inFlight = new Set<ServerResponse>();
  let closing: Promise<void> | undefined;
  server.on('request', (_request: IncomingMessage, response: ServerResponse) => {
    if (closing && !response.headersSent) response.setHeader('connection', 'close');
    inFlight.add(response);
    response.once('close', () => inFlight.delete(response));
  });
  return {
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const response of inFlight) {
          if (!response.headersSent) response.setHeader('connection', 'close');
        }
        // a connection whose answer went out becomes idle: closed on the next tick
        const idle = setInterval(() => server.closeIdleConnections(), 50);
        cutAfterGrace(
          accepting,
          () => {
            server.closeAllConnections();
            cutAlso?.();
          },
          graceMs,
        );
        accepting.close(() => {
          clearInterval(idle);
          resolve();
        });
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}

/**
 * Calls `cut` once `graceMs` have passed since now, unless `server` (being closed) has closed
 * by then, its last connection gone. Node checks no headers or request timeout once a server
 * closes, so without it a client still sending its request (a byte at a time, never idle)
 * would hold the close for ever.
 */
export function cutAfterGrace(server: Server, cut: () => void, graceMs = SHUTDOWN_GRACE_MS): void {
  const timer = setTimeout(cut, graceMs);
  server.once('close', () => clearTimeout(timer));
}

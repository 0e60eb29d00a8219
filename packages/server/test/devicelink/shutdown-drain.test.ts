import { once } from 'node:events';
import { connect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DeviceLinkFixture, freshCsr, startDeviceLinkFixture, type TestDevice } from './fixture.ts';

/** A device's own TLS connection, read as raw HTTP/1.1, so the test decides when each byte goes. */
async function rawLink(f: DeviceLinkFixture, device: TestDevice) {
  const [host, port] = f.address.split(':');
  const socket: TLSSocket = connect({
    host,
    port: Number(port),
    ca: f.serviceCa,
    servername: `${f.subdomain}.device-link.localhost`,
    key: device.key,
    cert: device.cert,
  });
  await once(socket, 'secureConnect');
  let received = '';
  const waiters: Array<() => void> = [];
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    received += chunk;
    for (const wake of waiters.splice(0)) wake();
  });
  let ended = false;
  const closed = once(socket, 'close').then(() => {
    ended = true;
    for (const wake of waiters.splice(0)) wake();
  });
  return {
    socket,
    closed,
    /** Waits until what was received (since `from`) matches `pattern`; everything since `from`. */
    async until(pattern: RegExp | ((text: string) => boolean), from = 0): Promise<string> {
      const done = typeof pattern === 'function' ? pattern : (text: string) => pattern.test(text);
      while (!done(received.slice(from))) {
        if (ended)
          throw new Error(
            `the connection closed; received after the mark: ${JSON.stringify(received.slice(from))}`,
          );
        await new Promise<void>((resolve) => waiters.push(resolve));
      }
      return received.slice(from);
    },
    get length() {
      return received.length;
    },
  };
}

const manifest = 'GET /device-link/v1/manifest HTTP/1.1\r\nhost: device-link\r\n\r\n';
/** A complete answer: its head, and a body of the content-length it announced. */
const ANSWER = /HTTP\/1\.1 (\d{3})[\s\S]*?\r\ncontent-length: (\d+)\r\n[\s\S]*?\r\n\r\n/i;

function complete(text: string): { status: number; head: string; body: string } | undefined {
  const m = ANSWER.exec(text);
  if (!m) return undefined;
  const bodyStart = m.index + m[0].length;
  const length = Number(m[2]);
  if (text.length - bodyStart < length) return undefined;
  return { status: Number(m[1]), head: m[0], body: text.slice(bodyStart, bodyStart + length) };
}

describe('device-link on shutdown', () => {
  let f: DeviceLinkFixture;
  let stopped = false;

  beforeAll(async () => {
    f = await startDeviceLinkFixture('sqlite');
  });
  afterAll(async () => {
    if (!stopped) await f?.svc.stop();
  });

  it('answers the enrollment in flight, closes idle connections at once and takes no new one', async () => {
    const enrolling = await rawLink(f, await f.device());
    const idle = await rawLink(f, await f.device());
    for (const link of [enrolling, idle]) {
      link.socket.write(manifest);
      const answer = complete(await link.until((text) => complete(text) !== undefined));
      expect(answer?.status, answer?.body).toBe(200);
    }
    // the enrollment's head is in: 100 Continue says the server has parsed it and waits for the CSR
    const csr = (await freshCsr()).base64;
    const from = enrolling.length;
    enrolling.socket.write(
      'POST /.well-known/est/fio-device-gateway-ca/simpleenroll HTTP/1.1\r\nhost: device-link\r\n' +
        'content-type: application/pkcs10\r\ncontent-transfer-encoding: base64\r\n' +
        `expect: 100-continue\r\ncontent-length: ${csr.length}\r\n\r\n`,
    );
    await enrolling.until(/^HTTP\/1\.1 100 Continue\r\n\r\n/, from);

    const stopping = f.svc.stop();
    stopped = true;
    // the idle keep-alive connection ends without waiting for the one in flight
    await idle.closed;
    // and no new device gets in
    const [host, port] = f.address.split(':');
    const refused = connect({ host, port: Number(port), rejectUnauthorized: false });
    const [error] = await once(refused, 'error');
    expect((error as NodeJS.ErrnoException).code).toBe('ECONNREFUSED');

    enrolling.socket.write(csr);
    const final = (text: string) => complete(text.replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, ''));
    const answer = final(await enrolling.until((text) => final(text) !== undefined, from))!;
    expect(answer.status, answer.body).toBe(200);
    expect(answer.head).toMatch(/\r\nconnection: close\r\n/i);
    expect(answer.head).toMatch(/\r\ncontent-type: application\/pkcs7-mime/i);
    expect(answer.body.length).toBeGreaterThan(100);
    await enrolling.closed;
    await stopping;
  });
});

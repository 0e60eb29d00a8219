import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RawAnswer, rawTls } from '../../../../test/support/raw-tls.ts';
import { type DeviceLinkFixture, freshCsr, startDeviceLinkFixture, type TestDevice } from './fixture.ts';

/**
 * Small limits, still far above what a valid call needs on a busy machine: its head is sent in
 * one write, the moment the handshake is done (the timers start with the connection; time spent
 * answering does not count).
 */
const LIMITS = { headersTimeoutMs: 1_000, requestTimeoutMs: 2_000 };
/**
 * Ample for the 2 s limit on a loaded machine, and below Node's own 30 s check interval: a
 * listener that checked its timers only that often fails here rather than passing late.
 */
const TEST_TIMEOUT_MS = 20_000;

const MANIFEST = 'GET /device-link/v1/manifest HTTP/1.1\r\nhost: device-link\r\n\r\n';

function expectRequestTimeout(answer: RawAnswer) {
  expect(answer.status, answer.body).toBe(408);
  expect(answer.head).toMatch(/\r\ncontent-type: application\/problem\+json\r\n/i);
  expect(answer.head).toMatch(/\r\nconnection: close\r\n/i);
  expect(JSON.parse(answer.body)).toMatchObject({ status: 408, code: 'request_timeout' });
}

/**
 * Devices that send their request too slowly, a byte at a time so the connection is never idle:
 * only the headers and request timeouts can end them. Each is answered 408 request_timeout and
 * closed, and the listener keeps serving.
 */
describe('device-link slow clients', () => {
  let f: DeviceLinkFixture;
  beforeAll(async () => {
    f = await startDeviceLinkFixture('sqlite', { deviceLink: { listen: '127.0.0.1:0', limits: LIMITS } });
  });
  afterAll(async () => f?.svc.stop());

  /** A device's own TLS connection, read as raw HTTP/1.1. */
  const link = (device: TestDevice) =>
    rawTls({
      address: f.address,
      ca: f.serviceCa,
      servername: `${f.subdomain}.device-link.localhost`,
      key: device.key,
      cert: device.cert,
    });

  /** The listener still serves: a manifest call of `device` on a new connection. */
  async function expectServing(device: TestDevice) {
    const next = await link(device);
    next.socket.write(MANIFEST);
    const answer = await next.answer();
    expect(answer.status, answer.body).toBe(200);
    next.socket.destroy();
  }

  /**
   * A device sends `start`, then `drip(i)` every 50 ms: it is answered 408 request_timeout and
   * nothing else, its connection closed, and the listener then serves it on a new one.
   */
  async function expectCutOff(start: string, drip: (i: number) => string) {
    const device = await f.device();
    const slow = await link(device);
    slow.socket.write(start);
    slow.drip(drip, 50);
    const answer = await slow.answer();
    await slow.closed;
    expectRequestTimeout(answer);
    expect(slow.received.length).toBe(answer.end);
    await expectServing(device);
  }

  it(
    'answers 408 to a device that drips its request head past the headers timeout',
    async () => {
      // a header line every 50 ms: never idle, the head never ends (the 408 is all the answer:
      // the head never reached a route)
      await expectCutOff(
        'GET /device-link/v1/manifest HTTP/1.1\r\nhost: device-link\r\n',
        (i) => `x-drip-${i}: 1\r\n`,
      );
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'answers 408 to a device whose head is complete but whose body comes too slowly (enroll)',
    async () => {
      const csr = (await freshCsr()).base64;
      // a byte every 50 ms: the CSR would take tens of seconds, past the 2 s request timeout (the
      // enrollment waited for its body: nothing else was answered; the device, not marked failed
      // or rate limited for it, is served at once)
      await expectCutOff(
        'POST /.well-known/est/fio-device-gateway-ca/simpleenroll HTTP/1.1\r\nhost: device-link\r\n' +
          `content-type: application/pkcs10\r\ncontent-length: ${csr.length}\r\n\r\n`,
        (i) => csr[i] ?? '',
      );
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'answers a refused request at once, then 408 when the body it left unread comes too slowly',
    async () => {
      // What Node does: the refusal (keep-alive) is sent while the body is still arriving;
      // Node reads and drops the rest, and the request timeout still ends the connection.
      const stranger = await f.device({ allowList: false });
      const slow = await link(stranger);
      slow.socket.write(
        'POST /device-link/v1/report HTTP/1.1\r\nhost: device-link\r\n' +
          'content-type: application/json\r\ncontent-length: 100000\r\n\r\n',
      );
      slow.drip(() => ' ', 50);
      const refused = await slow.answer();
      expect(refused.status, refused.body).toBe(403);
      expect(JSON.parse(refused.body).code).toBe('device_not_allowlisted');
      const answer = await slow.answer(refused.end);
      await slow.closed;
      expectRequestTimeout(answer);
      await expectServing(await f.device());
    },
    TEST_TIMEOUT_MS,
  );
});

import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { rawConnection } from '../../../../test/support/raw-tls.ts';
import { startTestService, type TestService } from '../support/service.ts';

/** What came back on a raw connection until the server closed it. */
interface RawAnswer {
  status: number;
  headers: string;
  json: any;
  /** Milliseconds from the last byte sent to the close. */
  closedAfterMs: number;
}

function parse(raw: string, closedAfterMs: number): RawAnswer {
  const split = raw.indexOf('\r\n\r\n');
  const headers = split < 0 ? raw : raw.slice(0, split);
  let json: unknown;
  try {
    json = JSON.parse(raw.slice(split + 4));
  } catch {}
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(headers)?.[1] ?? 0), headers, json, closedAfterMs };
}

/** Sends bytes as they are (no client library to tidy them) and reads until the server closes. */
function rawExchange(socket: Socket, bytes: string | Buffer): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    let text = '';
    let sentAt = Date.now();
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
    socket.on('error', (err) => (text === '' ? reject(err) : undefined));
    socket.on('close', () => resolve(parse(text, Date.now() - sentAt)));
    socket.write(bytes, () => (sentAt = Date.now()));
  });
}

function plain(address: string): Promise<Socket> {
  const { hostname, port } = new URL(address);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => resolve(socket));
    socket.once('error', reject);
  });
}

function tls(address: string): Promise<Socket> {
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => resolve(socket));
    socket.once('error', reject);
  });
}

function expectProblem(answer: RawAnswer, status: number, code: string) {
  expect(answer.status, answer.headers).toBe(status);
  expect(answer.headers).toMatch(/\r\nContent-Type: application\/problem\+json/i);
  expect(answer.json).toMatchObject({ status, code, type: `urn:keyferry:problem:${code}` });
  expect(answer.json.detail).toEqual(expect.any(String));
}

/**
 * Parser-level refusals (issue 12 §2): before this fix fastify and Node answered them with an
 * empty body, `text/plain` or fastify's own JSON, not a problem with a keyferry code.
 */
describe('every refusal is a problem, also before any route runs', () => {
  let svc: TestService;

  beforeAll(async () => {
    svc = await startTestService('sqlite', {
      api: { listen: '127.0.0.1:0', limits: { headersTimeoutMs: 400, requestTimeoutMs: 800 } },
      deviceLink: { listen: '127.0.0.1:0', limits: { headersTimeoutMs: 400, requestTimeoutMs: 800 } },
    });
  });
  afterAll(async () => svc?.stop());

  const api = async (bytes: string | Buffer) => rawExchange(await plain(svc.url), bytes);

  it('management API: bad percent-encoding in the path is invalid_request (was FST_ERR_BAD_URL)', async () => {
    const answer = await api('GET /ota/factories/%E0%A4%A HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expectProblem(answer, 400, 'invalid_request');
    expect(answer.json.detail).toMatch(/percent-encoding/);
  });

  it('management API: a path parameter over 100 characters is url_too_long (was a bare 414)', async () => {
    const answer = await api(
      `GET /ota/factories/${'a'.repeat(101)}/certs/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    );
    expectProblem(answer, 414, 'url_too_long');
  });

  it('management API: a NUL in Content-Type is invalid_request', async () => {
    const answer = await api(
      'POST /ota/factories/demo/tokens/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\0x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}',
    );
    expectProblem(answer, 400, 'invalid_request');
  });

  it('management API: headers over 16 KiB are headers_too_large (was fastify JSON 431)', async () => {
    const answer = await api(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expectProblem(answer, 431, 'headers_too_large');
  });

  it('management API: Expect other than 100-continue is expectation_failed (was an empty 417)', async () => {
    const answer = await api(
      'GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nConnection: close\r\n\r\n',
    );
    expectProblem(answer, 417, 'expectation_failed');
  });

  it('management API: a body that never comes is request_timeout within the configured limit (was never)', async () => {
    // with a valid token, so the route's hooks pass and the body is awaited
    const answer = await api(
      `POST /ota/factories/demo/tokens/ HTTP/1.1\r\nHost: x\r\nOSF-Token: ${svc.token}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n`,
    );
    expectProblem(answer, 408, 'request_timeout');
    // limit 800 ms, checked every 40 ms; generous bound for a loaded machine
    expect(answer.closedAfterMs).toBeGreaterThanOrEqual(700);
    expect(answer.closedAfterMs).toBeLessThan(10_000);
  });

  it('management API: a body dripped a byte at a time is request_timeout at the same limit, and the API serves on', async () => {
    // Never idle, unlike the body that never comes: only the request timeout can end it.
    const slow = rawConnection(await plain(svc.url));
    // a failure must not leave it dripping: the service's stop would wait for it
    onTestFinished(() => void slow.socket.destroy());
    slow.socket.write(
      `POST /ota/factories/demo/tokens/ HTTP/1.1\r\nHost: x\r\nOSF-Token: ${svc.token}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n`,
    );
    slow.drip(() => ' ', 50);
    const answer = await slow.answer();
    await slow.closed;
    expect(answer.status, answer.body).toBe(408);
    expect(answer.head).toMatch(/\r\nContent-Type: application\/problem\+json/i);
    expect(JSON.parse(answer.body)).toMatchObject({ status: 408, code: 'request_timeout' });
    // the route waited for its body: the 408 is all the answer
    expect(slow.received.length).toBe(answer.end);
    expect((await fetch(`${svc.url}/healthz`)).status).toBe(200);
  }, 20_000);

  it('device-link: a bad request line is invalid_request (was an empty 400)', async () => {
    const answer = await rawExchange(await tls(svc.service.addresses.deviceLink!), 'G@T / HTTP/1.1\r\n\r\n');
    expectProblem(answer, 400, 'invalid_request');
  });

  it('device-link: headers that never end are cut off at the configured headersTimeout (was ~29 s for 10 s)', async () => {
    const answer = await rawExchange(
      await tls(svc.service.addresses.deviceLink!),
      'GET /.well-known/est/cacerts HTTP/1.1\r\nHost: x\r\n',
    );
    expectProblem(answer, 408, 'request_timeout');
    expect(answer.closedAfterMs).toBeGreaterThanOrEqual(350);
    // Node's default check interval (30 s) made it ~29 s; now a tenth of the limit
    expect(answer.closedAfterMs).toBeLessThan(10_000);
  });
});

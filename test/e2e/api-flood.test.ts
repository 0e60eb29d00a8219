import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DaemonProcess, startKeyferryd } from '../support/processes.ts';

/** Small caps so the flood stays small; the defaults are in docs/configuration.md. */
const LIMITS = {
  headersTimeoutMs: 1_000,
  requestTimeoutMs: 2_000,
  maxConnections: 60,
  maxConnectionsPerAddress: 20,
};

interface Slow {
  socket: Socket;
  /** Resolves with what the server answered (maybe nothing) and when it closed. */
  done: Promise<{ answer: string; openMs: number }>;
}

/**
 * A POST that promises 100,000 bytes of body and sends none, from `localAddress`, with a valid
 * token: the route's hooks pass and fastify waits for the body.
 */
function slowPost(port: number, localAddress: string, token: string): Slow {
  const started = Date.now();
  const socket = connect({ host: '127.0.0.1', port, localAddress });
  let answer = '';
  socket.on('data', (d: Buffer) => (answer += d.toString('utf8')));
  socket.on('error', () => {});
  socket.on('connect', () =>
    socket.write(
      `POST /ota/factories/demo/tokens/ HTTP/1.1\r\nHost: x\r\nOSF-Token: ${token}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n`,
    ),
  );
  const done = new Promise<{ answer: string; openMs: number }>((resolve) =>
    socket.on('close', () => resolve({ answer, openMs: Date.now() - started })),
  );
  return { socket, done };
}

async function healthz(api: string): Promise<number> {
  const res = await fetch(`${api}/healthz`, { signal: AbortSignal.timeout(10_000) });
  await res.text();
  return res.status;
}

/** One HTTPS exchange with the device-link (no client certificate: the public cacerts). */
function deviceLinkAnswers(address: string): Promise<number> {
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path: '/.well-known/est/cacerts', rejectUnauthorized: false, agent: false },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error('device-link did not answer')));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Issue 12 §1: 1,010 sockets sending `POST` with `Content-Length: 100000` and no body held
 * the management API's connections forever, exhausted the file descriptors and took the
 * device-link and /healthz down with them. A smaller flood on loopback against a real
 * keyferryd with small caps: the slow requests are cut off with a request_timeout problem
 * within the limit, the connections past a cap are closed at once, and the service answers.
 */
describe('management API under a slow-body flood (real keyferryd, loopback)', () => {
  let work: string;
  let daemon: DaemonProcess;
  let apiPort: number;
  let token: string;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-flood-'));
    const config = join(work, 'keyferry.json');
    writeFileSync(config, JSON.stringify({ api: { limits: LIMITS }, demoFactory: { enabled: true } }));
    daemon = await startKeyferryd(join(work, 'data'), { args: ['--config', config] });
    token = readFileSync(join(work, 'data', 'demo.token'), 'utf8').trim();
    apiPort = Number(new URL(daemon.listen.api).port);
  }, 120_000);
  afterAll(async () => {
    await daemon?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('one flooding address: its slow requests end in request_timeout, others get /healthz and the device-link', async () => {
    // 127.0.0.2 is loopback too (127/8): the flooder has its own address, the operator keeps 127.0.0.1
    const flood = Array.from({ length: 80 }, () => slowPost(apiPort, '127.0.0.2', token));
    await Promise.all(
      flood.map((f) => new Promise((r) => (f.socket.connecting ? f.socket.once('connect', r) : r(0)))),
    );
    expect(await healthz(daemon.listen.api)).toBe(200);
    expect(await deviceLinkAnswers(daemon.listen.deviceLink!)).toBeGreaterThanOrEqual(200);
    const ends = await Promise.all(flood.map((f) => f.done));
    const answered = ends.filter((e) => e.answer !== '');
    // at most the per-address cap was admitted; the rest were closed without a word
    expect(answered.length).toBeGreaterThan(0);
    expect(answered.length).toBeLessThanOrEqual(LIMITS.maxConnectionsPerAddress);
    for (const e of answered) {
      expect(e.answer).toMatch(/^HTTP\/1\.1 408 /);
      expect(e.answer).toMatch(/\r\nContent-Type: application\/problem\+json\r\n/i);
      expect(e.answer).toContain('"code":"request_timeout"');
      // requestTimeoutMs 2 s, checked every 100 ms; the upper bound is generous for a busy machine
      expect(e.openMs).toBeLessThan(LIMITS.requestTimeoutMs + 15_000);
    }
    expect(daemon.stdout() + daemon.stderr()).toMatch(/too many connections from 127\.0\.0\.2/);
    // the cut-off requests are the clients' doing: no error lines ("request failed … aborted" before)
    expect(daemon.stdout()).not.toMatch(/"level":50/);
  }, 120_000);

  it('a flood from many addresses fills the API cap, and the device-link keeps its own', async () => {
    const flood = ['127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6'].flatMap((from) =>
      Array.from({ length: LIMITS.maxConnectionsPerAddress }, () => slowPost(apiPort, from, token)),
    );
    await Promise.all(
      flood.map((f) => new Promise((r) => (f.socket.connecting ? f.socket.once('connect', r) : r(0)))),
    );
    for (let i = 0; i < 5; i++)
      expect(await deviceLinkAnswers(daemon.listen.deviceLink!)).toBeGreaterThanOrEqual(200);
    const ends = await Promise.all(flood.map((f) => f.done));
    expect(ends.filter((e) => e.answer !== '').length).toBeLessThanOrEqual(LIMITS.maxConnections);
    // after the flood the API serves again
    expect(await healthz(daemon.listen.api)).toBe(200);
  }, 120_000);
});

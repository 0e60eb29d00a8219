import { once } from 'node:events';
import { connect } from 'node:net';
import { describe, expect, it, onTestFinished } from 'vitest';
import { rawConnection } from '../../../../test/support/raw-tls.ts';
import { SHUTDOWN_GRACE_MS } from '../../src/http/listen.ts';
import { startTestService } from '../support/service.ts';

/** Far past the grace period: only the grace cut may end the connection. */
const LONG = 600_000;

describe('management API on stop', () => {
  it(
    'cuts a request still arriving when the grace period ends (a body dripped a byte at a time held the stop forever)',
    async () => {
      const svc = await startTestService('sqlite', {
        api: {
          listen: '127.0.0.1:0',
          limits: { headersTimeoutMs: LONG, requestTimeoutMs: LONG, idleTimeoutMs: LONG },
        },
      });
      const { hostname, port } = new URL(svc.url);
      const socket = connect(Number(port), hostname);
      await once(socket, 'connect');
      const slow = rawConnection(socket);
      // on failure the stop below would wait for this client for ever
      onTestFinished(() => void slow.socket.destroy());
      // a valid token, so the route's hooks pass; 100 Continue says the route is reading the body
      slow.socket.write(
        `POST /ota/factories/demo/tokens/ HTTP/1.1\r\nHost: x\r\nOSF-Token: ${svc.token}\r\n` +
          'Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n',
      );
      await slow.until(/^HTTP\/1\.1 100 Continue\r\n\r\n$/);
      // never idle; Node checks no request timeout once the server closes (and these are long)
      slow.drip(() => ' ', 50);
      const startedAt = Date.now();
      await svc.stop();
      // the stop waited the grace period for the request, then cut it, unanswered
      expect(Date.now() - startedAt).toBeGreaterThanOrEqual(SHUTDOWN_GRACE_MS - 100);
      await slow.closed;
      expect(slow.received).toBe('HTTP/1.1 100 Continue\r\n\r\n');
    },
    3 * SHUTDOWN_GRACE_MS + 30_000,
  );

  it('answers a request in flight with Connection: close, then closes its connection (was: keep-alive, closed under the client)', async () => {
    const svc = await startTestService('sqlite', { api: { listen: '127.0.0.1:0' } });
    const { hostname, port } = new URL(svc.url);
    const socket = connect(Number(port), hostname);
    await once(socket, 'connect');
    const client = rawConnection(socket);
    onTestFinished(() => void client.socket.destroy());
    const body = '{"description": "in flight"}';
    client.socket.write(
      `POST /ota/factories/demo/tokens/ HTTP/1.1\r\nHost: x\r\nOSF-Token: ${svc.token}\r\n` +
        `Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\n\r\n`,
    );
    await client.until(/^HTTP\/1\.1 100 Continue\r\n\r\n$/);
    const stopped = svc.stop();
    // the API takes no new connection once its stop has begun (its preClose hooks ran before)
    await refusesConnections(hostname, Number(port));
    client.socket.write(body);
    const answer = await client.answer();
    expect(answer.head).toMatch(/\r\nconnection: close\r\n/i);
    await client.closed;
    await stopped;
  }, 60_000);
});

/** Resolves once a new TCP connection to the address is refused (bounded by the test's timeout). */
async function refusesConnections(host: string, port: number): Promise<void> {
  for (;;) {
    const probe = connect(port, host);
    const refused = await new Promise<boolean>((resolve) => {
      probe.once('connect', () => resolve(false));
      probe.once('error', () => resolve(true));
    });
    probe.destroy();
    if (refused) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

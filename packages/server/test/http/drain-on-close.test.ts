import { once } from 'node:events';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { drainOnClose } from '../../src/http/listen.ts';

/** A plain HTTP server whose /stuck requests are never answered; /slow ones when `release` is called. */
async function server(graceMs: number) {
  let release: () => void = () => {};
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  const http = createServer((req, res) => {
    if (req.url === '/slow') void released.then(() => res.end('done'));
    // /stuck: never answered
  });
  const draining = drainOnClose(http, { graceMs });
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  const port = (http.address() as AddressInfo).port;
  const get = (path: string) =>
    new Promise<{ status: number; connection: string | undefined; body: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
          body += chunk;
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body }),
        );
      });
      req.on('error', reject);
      req.end();
    });
  const arrived = () => new Promise<void>((resolve) => http.once('request', () => resolve()));
  return { draining, get, release, arrived };
}

describe('drainOnClose', () => {
  it('lets a request in flight finish, answered with Connection: close, before close resolves', async () => {
    const s = await server(60_000);
    const arrived = s.arrived();
    const answer = s.get('/slow');
    await arrived;
    let closed = false;
    const closing = s.draining.close().then(() => {
      closed = true;
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(closed).toBe(false); // still waiting for the request in flight
    s.release();
    expect(await answer).toEqual({ status: 200, connection: 'close', body: 'done' });
    await closing;
    expect(closed).toBe(true);
  });

  it('cuts a request that does not finish within the grace period', async () => {
    const s = await server(200);
    const arrived = s.arrived();
    const answer = s.get('/stuck');
    await arrived;
    await s.draining.close();
    await expect(answer).rejects.toThrow(/socket hang up|ECONNRESET/);
  });
});

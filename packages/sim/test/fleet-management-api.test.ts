import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ManagementApi } from '../src/fleet/management-api.ts';

/**
 * The fleet's allow-list call outlasts a keyferryd restart: before, one SIGKILL while the
 * request was in flight failed it, and with it every device of the batch.
 */
describe('keyferry-sim fleet: management API calls retry transient failures', () => {
  let server: Server | undefined;
  afterEach(() => new Promise<void>((r) => (server ? server.close(() => r()) : r())));

  /** A service that answers with `answers` in turn: 'drop' closes the socket, a number is a status. */
  async function serve(answers: ('drop' | number)[]): Promise<{ url: string; bodies: string[] }> {
    const bodies: string[] = [];
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        bodies.push(body);
        const answer = answers.shift() ?? 200;
        if (answer === 'drop') return req.socket.destroy();
        res.writeHead(answer, {
          'content-type': answer === 200 ? 'application/json' : 'application/problem+json',
        });
        if (answer === 200) {
          const ids = (JSON.parse(body) as { devices: string[] }).devices;
          res.end(JSON.stringify({ results: ids.map((id) => ({ id, status: 'added' })) }));
        } else res.end(JSON.stringify({ code: 'internal', detail: 'down' }));
      });
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    return { url: `http://127.0.0.1:${(server!.address() as AddressInfo).port}`, bodies };
  }

  it('adds the batch after a dropped connection, a 503 and a 429', async () => {
    const { url, bodies } = await serve(['drop', 503, 429]);
    const api = new ManagementApi({ server: url, factory: 'demo', token: 't', retryDelayMs: 5 });
    const results = await api.allowList('935389312472', ['0x01', '0x02']);
    expect(results).toEqual([
      { id: '0x01', status: 'added' },
      { id: '0x02', status: 'added' },
    ]);
    expect(bodies).toHaveLength(4);
    expect(new Set(bodies).size).toBe(1); // the same request each time
  });

  it('gives up with the last failure once the retry time is spent', async () => {
    const { url } = await serve([503, 503, 503, 503, 503, 503]);
    const api = new ManagementApi({
      server: url,
      factory: 'demo',
      token: 't',
      retryForMs: 50,
      retryDelayMs: 20,
    });
    await expect(api.allowList('935389312472', ['0x01'])).rejects.toThrow(
      'POST /ota/factories/demo/el2g/devices/: down (internal)',
    );
  });

  it('does not retry a refusal (4xx)', async () => {
    const { url, bodies } = await serve([403]);
    const api = new ManagementApi({ server: url, factory: 'demo', token: 't', retryDelayMs: 5 });
    await expect(api.allowList('935389312472', ['0x01'])).rejects.toThrow('(internal)');
    expect(bodies).toHaveLength(1);
  });

  /** A server that answers every request 200 with `body`. */
  async function answering(body: string): Promise<string> {
    server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': body.startsWith('<') ? 'text/html' : 'application/json' });
      res.end(body);
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(server!.address() as AddressInfo).port}`;
  }

  it('refuses a 200 that is not JSON, asking whether --server is the management API', async () => {
    const url = await answering('<html>a web server</html>');
    const api = new ManagementApi({ server: url, factory: 'demo', token: 't' });
    await expect(api.repoId()).rejects.toThrow(
      new Error(`GET ${url}/ota/factories/ did not answer JSON; is --server the keyferry management API?`),
    );
  });

  it('refuses JSON of another shape than the call expects', async () => {
    const url = await answering('{"hello": "world"}');
    const api = new ManagementApi({ server: url, factory: 'demo', token: 't' });
    const shape = (path: string) =>
      new Error(`GET ${url}${path} answered JSON of another shape; is --server the keyferry management API?`);
    await expect(api.repoId()).rejects.toThrow(shape('/ota/factories/'));
    await expect(api.subdomain()).rejects.toThrow(shape('/ota/factories/demo/el2g/overview/'));
    await expect(api.allowList('935389312472', ['0x01'])).rejects.toThrow(
      new Error(
        `POST ${url}/ota/factories/demo/el2g/devices/ answered JSON of another shape; is --server the keyferry management API?`,
      ),
    );
  });

  it('refuses a malformed --server at once instead of retrying it as unreachable', () => {
    expect(() => new ManagementApi({ server: 'http://exa mple:80', factory: 'demo', token: 't' })).toThrow(
      new Error('--server http://exa mple:80 is not a URL; pass the management API as http(s)://HOST:PORT'),
    );
  });
});

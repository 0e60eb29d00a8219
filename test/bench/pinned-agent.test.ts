import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PinnedAgent, pinnedServerCertificate, send } from '../../bench/lib/keep-alive-client.ts';

/**
 * The load generator's server check (bench/lib/keep-alive-client.ts): instead of Node's per-handshake
 * verification, one certificate checked at the start and compared on every connection. Both
 * halves must refuse what a device would refuse. Certificates made with the openssl CLI.
 */
describe('PinnedAgent and pinnedServerCertificate', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keyferry-pinned-'));
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const file = (name: string) => join(dir, name);
  let server: Server;
  let port = 0;
  let requests = 0;

  /** A P-256 key and a certificate for `name` with `san`, signed by the CA (or self-signed). */
  function leaf(name: string, san: string, signer: 'ca' | 'self') {
    openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`);
    writeFileSync(file(`${name}.ext`), `subjectAltName=${san}\n`);
    if (signer === 'self') {
      openssl(
        'req',
        '-x509',
        '-new',
        '-key',
        `${name}.key`,
        '-subj',
        `/CN=${name}`,
        '-days',
        '2',
        '-addext',
        `subjectAltName=${san}`,
        '-out',
        `${name}.pem`,
      );
      return;
    }
    openssl('req', '-new', '-key', `${name}.key`, '-subj', `/CN=${name}`, '-out', `${name}.csr`);
    openssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.pem`,
    );
  }

  beforeAll(async () => {
    openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key');
    openssl(
      'req',
      '-x509',
      '-new',
      '-key',
      'ca.key',
      '-subj',
      '/CN=bench service CA',
      '-days',
      '2',
      '-out',
      'ca.pem',
    );
    leaf('served', 'DNS:*.device-link.example', 'ca');
    leaf('other', 'DNS:*.device-link.example', 'ca');
    leaf('stranger', 'DNS:*.device-link.example', 'self');
    server = createServer(
      { key: readFileSync(file('served.key')), cert: readFileSync(file('served.pem')) },
      (_req, res) => {
        requests++;
        res.end('ok');
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  afterAll(() => {
    server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const ca = () => readFileSync(file('ca.pem'), 'utf8');
  const call = (pin: Buffer) => {
    const agent = new PinnedAgent({ host: '127.0.0.1', port, keepAlive: true }, pin);
    return send({
      agent,
      tls: true,
      servername: 'acme.device-link.example',
      method: 'GET',
      path: '/',
    }).finally(() => agent.destroy());
  };

  it('accepts the server whose certificate it was given, and only that one', async () => {
    const served = pinnedServerCertificate(file('served.pem'), ca(), 'acme.device-link.example');
    const before = requests;
    expect(await call(served)).toBe('ok');
    expect(requests).toBe(before + 1);

    // the same CA's other certificate for the same names is still not the server's
    const other = pinnedServerCertificate(file('other.pem'), ca(), 'acme.device-link.example');
    await expect(call(other)).rejects.toThrow(
      /presented the certificate of CN=served, not the one this run checked/,
    );
    expect(requests).toBe(before + 1);
  });

  it('refuses, at the start, a certificate a device would refuse, naming why', () => {
    expect(() => pinnedServerCertificate(file('stranger.pem'), ca(), 'acme.device-link.example')).toThrow(
      /stranger\.pem is not signed by the CA CN=bench service CA/,
    );
    expect(() => pinnedServerCertificate(file('served.pem'), ca(), 'acme.device-link.elsewhere')).toThrow(
      /served\.pem is not for acme\.device-link\.elsewhere/,
    );
  });
});

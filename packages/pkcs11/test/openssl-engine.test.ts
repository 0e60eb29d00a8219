import { execFileSync, spawnSync } from 'node:child_process';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, createServer, type TLSSocket } from 'node:tls';
import {
  findOpensslPkcs11Engine,
  findSofthsmModule,
  opensslEngineKeyUri,
  openToken,
  type Token,
} from '@keyferry/pkcs11';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSofthsmEnv, initTestToken, type SofthsmEnv } from '../../../test/support/softhsm.ts';

let env: SofthsmEnv;
let token: Token;
const PIN = '87654321';
const ODD_LABEL = 'fio key;%1 ?&';

beforeAll(() => {
  env = createSofthsmEnv();
  initTestToken(env.conf);
  token = openToken({ module: env.module, tokenLabel: 'aktualizr', pin: PIN });
  token.generateEcKeyPair({ label: 'SE_83000042', id: Buffer.from([0x01]) });
  token.generateEcKeyPair({ label: ODD_LABEL, id: Buffer.from([0x04, 0x25]) });
});

afterAll(() => {
  token?.close();
  env?.cleanup();
});

/** Runs openssl with the engine pointed at this test's SoftHSM store. */
function openssl(args: string[]): Buffer {
  return execFileSync('openssl', args, {
    env: { ...env.env, PKCS11_MODULE_PATH: env.module },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

describe('opensslEngineKeyUri', () => {
  it('writes the RFC 7512 form with the PIN in the query', () => {
    expect(opensslEngineKeyUri({ tokenLabel: 'aktualizr', objectLabel: 'SE_83000042', pin: PIN })).toBe(
      'pkcs11:token=aktualizr;object=SE_83000042;type=private?pin-value=87654321',
    );
  });

  it('percent-encodes separators, spaces and ids, and leaves the PIN out when not given', () => {
    expect(
      opensslEngineKeyUri({
        tokenLabel: 'my token',
        objectLabel: 'a;b?c&d%e/é',
        objectId: Buffer.from([0x41, 0x00]),
      }),
    ).toBe('pkcs11:token=my%20token;object=a%3Bb%3Fc%26d%25e%2F%C3%A9;id=%41%00;type=private');
    expect(opensslEngineKeyUri({ tokenLabel: 't', objectLabel: 'k', pin: 'p;1&x' })).toMatch(
      /\?pin-value=p%3B1%26x$/,
    );
    expect(() => opensslEngineKeyUri({ tokenLabel: 't' })).toThrow(TypeError);
  });
});

describe('install paths', () => {
  it('finds the engine and the SoftHSM module Debian installed', () => {
    const engine = findOpensslPkcs11Engine();
    const listed = execFileSync('dpkg', ['-L', 'libengine-pkcs11-openssl'], { encoding: 'utf8' }).split('\n');
    expect(listed).toContain(engine);
    expect(engine).toMatch(/\/engines-3\/pkcs11\.so$/);
    expect(findSofthsmModule()).toBe('/usr/lib/softhsm/libsofthsm2.so');
    expect(existsSync(findSofthsmModule())).toBe(true);
  });
});

describe('the OpenSSL engine with a token key', () => {
  it.each([
    ['a plain label', { objectLabel: 'SE_83000042' }, { label: 'SE_83000042' }],
    ['a label full of separators', { objectLabel: ODD_LABEL }, { label: ODD_LABEL }],
    ['an id', { objectId: Buffer.from([0x04, 0x25]) }, { id: Buffer.from([0x04, 0x25]) }],
  ])('makes a CSR that openssl verifies, with %s', (_name, object, selector) => {
    const uri = opensslEngineKeyUri({ tokenLabel: 'aktualizr', pin: PIN, ...object });
    const csr = join(env.dir, 'request.pem');
    const engineKey = ['-engine', 'pkcs11', '-keyform', 'engine', '-key', uri];
    openssl(['req', '-new', ...engineKey, '-subj', '/CN=engine-test', '-out', csr]);
    const check = spawnSync('openssl', ['req', '-in', csr, '-verify', '-noout'], { encoding: 'utf8' });
    expect(check.status).toBe(0);
    expect(check.stderr).toContain('self-signature verify OK');
    const csrKey = createPublicKey(openssl(['req', '-in', csr, '-pubkey', '-noout']));
    expect(csrKey.export({ format: 'der', type: 'spki' })).toEqual(token.publicKeySpki(selector));
  });

  it('fails with a wrong PIN in the URI, so the PIN is really what unlocks the key', () => {
    const uri = opensslEngineKeyUri({ tokenLabel: 'aktualizr', objectLabel: 'SE_83000042', pin: '99999999' });
    const engineKey = ['-engine', 'pkcs11', '-keyform', 'engine', '-key', uri];
    const run = spawnSync('openssl', ['req', '-new', ...engineKey, '-subj', '/CN=x'], {
      env: { ...env.env, PKCS11_MODULE_PATH: env.module },
      encoding: 'utf8',
    });
    // libp11 0.4.12 then crashes on exit (SIGSEGV) instead of exiting 1: either way, no CSR.
    expect(run.status === 0).toBe(false);
    expect(run.stdout).not.toContain('BEGIN CERTIFICATE REQUEST');
    expect(run.stderr).toContain('PIN incorrect');
    // One wrong try leaves the right PIN working.
    openToken({ module: env.module, tokenLabel: 'aktualizr', pin: PIN }).close();
  });

  it('gives Node TLS a client key that stays in the token (privateKeyEngine)', async () => {
    const uri = opensslEngineKeyUri({ tokenLabel: 'aktualizr', objectLabel: 'SE_83000042', pin: PIN });
    const engineKey = ['-engine', 'pkcs11', '-keyform', 'engine', '-key', uri];
    const clientCert = openssl(['req', '-new', '-x509', ...engineKey, '-subj', '/CN=device', '-days', '1']);
    const serverKey = join(env.dir, 'server.key');
    const serverCert = join(env.dir, 'server.pem');
    const softKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', serverKey];
    openssl(['req', '-x509', ...softKey, '-subj', '/CN=localhost', '-days', '1', '-out', serverCert]);

    // libp11 inside this process finds the module here; Node passes it nothing else.
    process.env.PKCS11_MODULE_PATH = env.module;
    const peer = await new Promise<X509Certificate>((resolve, reject) => {
      const server = createServer(
        { key: readFileSync(serverKey), cert: readFileSync(serverCert), requestCert: true, ca: clientCert },
        (socket: TLSSocket) => {
          if (socket.authorized)
            resolve(new X509Certificate(socket.getPeerX509Certificate()?.raw ?? Buffer.alloc(0)));
          else reject(new Error(`client not authorized: ${socket.authorizationError}`));
          socket.end();
          server.close();
        },
      );
      server.on('tlsClientError', reject);
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address() as { port: number };
        const client = connect({
          host: '127.0.0.1',
          port,
          servername: 'localhost',
          ca: readFileSync(serverCert),
          cert: clientCert,
          privateKeyEngine: findOpensslPkcs11Engine(),
          privateKeyIdentifier: uri,
        });
        client.on('error', reject);
        client.resume();
      });
    });
    expect(peer.subject).toBe('CN=device');
    expect(peer.publicKey.export({ format: 'der', type: 'spki' })).toEqual(
      token.publicKeySpki({ label: 'SE_83000042' }),
    );
  });
});

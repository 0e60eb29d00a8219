import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey, generateKeyPairSync, verify, X509Certificate } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, createServer } from 'node:tls';
import { selfSignedCa, toPem } from '@keyferry/core';
import { openToken } from '@keyferry/pkcs11';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentError } from '../src/agent-error.ts';
import { Pkcs11SecureElement } from '../src/se/pkcs11-se.ts';
import type { SecureElement } from '../src/se/port.ts';
import { SoftSecureElement } from '../src/se/soft-se.ts';
import { refusal } from './support/refusal.ts';
import {
  createSecureElementFixtures,
  FIXTURE_UID,
  type SecureElementFixtures,
} from './support/secure-elements.ts';
import { serverPki } from './support/server-pki.ts';

const PIN = '87654321';
const GENERIC = [0x83000044];
let fx: SecureElementFixtures;
const elements: Record<'pkcs11' | 'soft', () => SecureElement> = {
  pkcs11: () =>
    new Pkcs11SecureElement({
      module: fx.softhsm.module,
      tokenLabel: 'aktualizr',
      pin: PIN,
      genericKeypairs: GENERIC,
    }),
  soft: () => new SoftSecureElement(fx.seDir),
};

beforeAll(async () => {
  fx = await createSecureElementFixtures();
});
afterAll(() => fx?.cleanup());

/** A throwaway self-signed certificate for a public key the SE holds (stands in for an issued one). */
async function certificateFor(se: SecureElement, keyId: number, cn: string): Promise<Uint8Array> {
  const spki = se.publicKey(keyId)!;
  return selfSignedCa({
    subject: { CN: cn },
    years: 1,
    signer: {
      publicKeySpki: spki,
      sign: async (data) => se.sign(keyId, createHash('sha256').update(data).digest()),
    },
  });
}

describe.each(['pkcs11', 'soft'] as const)('secure element contract: %s', (backend) => {
  let se: SecureElement;
  beforeAll(() => {
    se = elements[backend]();
  });
  afterAll(() => se?.close());

  it('reads the vendor UID', () => {
    expect(Buffer.from(se.uid()).toString('hex')).toBe(FIXTURE_UID);
  });

  it('gives the identity certificate and a key node:tls can authenticate with', async () => {
    const identity = se.identity();
    expect(Buffer.from(identity.certificateChain[0]!)).toEqual(Buffer.from(fx.identityCertificates[backend]));
    const pki = await serverPki(['localhost']);
    const peer = await new Promise<X509Certificate>((resolve, reject) => {
      const server = createServer(
        {
          key: pki.keyPem,
          cert: pki.certPem,
          requestCert: true,
          ca: toPem(fx.vendorCa, 'CERTIFICATE'),
        },
        (socket) => {
          if (socket.authorized) resolve(new X509Certificate(socket.getPeerX509Certificate()!.raw));
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
          ca: pki.caPem,
          cert: identity.certificateChain.map((der) => toPem(der, 'CERTIFICATE')).join(''),
          ...identity.tls,
        });
        client.on('error', reject);
        client.resume();
      });
    });
    expect(peer.subject).toContain(`CN=${FIXTURE_UID}`);
  });

  it('generates a key inside, signs digests with it, and refuses to generate over it', () => {
    const spki = se.generateKeyPair(0x83000042);
    expect(Buffer.from(se.publicKey(0x83000042)!)).toEqual(Buffer.from(spki));
    const data = Buffer.from('to be signed');
    const signature = se.sign(0x83000042, createHash('sha256').update(data).digest());
    const publicKey = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
    expect(verify('sha256', data, publicKey, signature)).toBe(true);
    expect(verify('sha256', Buffer.from('something else'), publicKey, signature)).toBe(false);
    const again = refusal(() => se.generateKeyPair(0x83000042));
    expect(again.kind).toBe('se_foreign_key');
    expect(again.message).toMatch(/already holds key SE_83000042 \(0x83000042\); it is kept/);
    expect(Buffer.from(se.publicKey(0x83000042)!)).toEqual(Buffer.from(spki));
  });

  it('stores, replaces and reads certificates; lists and deletes objects', async () => {
    expect(se.getCertificate(0x83000043)).toBeUndefined();
    const first = await certificateFor(se, 0x83000042, 'first');
    se.putCertificate(0x83000043, first);
    expect(Buffer.from(se.getCertificate(0x83000043)!)).toEqual(Buffer.from(first));
    const second = await certificateFor(se, 0x83000042, 'second');
    se.putCertificate(0x83000043, second);
    expect(Buffer.from(se.getCertificate(0x83000043)!)).toEqual(Buffer.from(second));

    se.generateKeyPair(0x83000044);
    const listed = se.list().map((o) => `${o.label}:${o.kind}`);
    expect(listed).toEqual(
      expect.arrayContaining([
        'SE_83000042:key',
        'SE_83000043:certificate',
        'SE_83000044:key',
        'SE_f0000000:key',
      ]),
    );
    expect(se.delete(0x83000044)).toBeGreaterThan(0);
    expect(se.publicKey(0x83000044)).toBeUndefined();
    expect(se.list().some((o) => o.objectId === 0x83000044)).toBe(false);
    expect(se.delete(0x83000044)).toBe(0);
  });

  it('says which object id is missing when asked to sign with a key it lacks', () => {
    const error = (() => {
      try {
        se.sign(0x83000050, Buffer.alloc(32));
      } catch (e) {
        return e as Error;
      }
      throw new Error('expected a refusal');
    })();
    expect(error).toBeInstanceOf(AgentError);
    expect(error.message).toMatch(/SE_83000050|83000050/);
  });
});

describe('pkcs11 backend specifics', () => {
  it('keeps generated keys sensitive and non-extractable, with the ids aktualizr-lite expects', () => {
    const listing = execFileSync(
      'pkcs11-tool',
      [
        '--module',
        fx.softhsm.module,
        '--token-label',
        'aktualizr',
        '--login',
        '--pin',
        PIN,
        '--list-objects',
      ],
      { env: fx.softhsm.env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const block = (kind: string, label: string) =>
      listing
        .split(/\n(?=\S)/)
        .map((b) => `${b.trimEnd()}\n`)
        .find((b) => b.startsWith(kind) && b.includes(`label:      ${label}\n`)) ?? '';
    expect(block('Private Key Object', 'SE_83000042')).toMatch(/ID:\s+01\n/);
    expect(block('Private Key Object', 'SE_83000042')).toMatch(
      /Access:\s+sensitive, always sensitive, never extractable/,
    );
    expect(block('Certificate Object', 'SE_83000043')).toMatch(/ID:\s+03\n/);
    const token = openToken({ module: fx.softhsm.module, tokenLabel: 'aktualizr', pin: PIN });
    try {
      const attributes = token.keyAttributes({ label: 'SE_83000042' });
      expect(attributes).toMatchObject({ extractable: false, sensitive: true, neverExtractable: true });
      const se = elements.pkcs11();
      se.generateKeyPair(0x83000044);
      expect(token.findPrivateKey({ label: 'SE_83000044' })?.id.toString('hex')).toBe('04');
      se.delete(0x83000044);
      se.close();
    } finally {
      token.close();
    }
  });

  it('refuses a key imported at an assigned object id as foreign, and leaves it in place', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const keyFile = join(fx.work, 'imported.der');
    writeFileSync(keyFile, privateKey.export({ format: 'der', type: 'pkcs8' }));
    execFileSync(
      'pkcs11-tool',
      [
        '--module',
        fx.softhsm.module,
        '--token-label',
        'aktualizr',
        '--login',
        '--pin',
        PIN,
        '--write-object',
        keyFile,
        '--type',
        'privkey',
        '--label',
        'SE_83000046',
        '--id',
        '06',
      ],
      { env: fx.softhsm.env, stdio: 'pipe' },
    );
    const se = new Pkcs11SecureElement({
      module: fx.softhsm.module,
      tokenLabel: 'aktualizr',
      pin: PIN,
      genericKeypairs: [0x83000044, 0x83000046],
    });
    try {
      const error = refusal(() => se.publicKey(0x83000046));
      expect(error.kind).toBe('se_foreign_key');
      expect(error.message).toMatch(
        /object 0x83000046 holds a key keyferry-agent did not generate \(it is or was extractable/,
      );
      expect(refusal(() => se.generateKeyPair(0x83000046)).kind).toBe('se_foreign_key');
      expect(se.list().some((o) => o.label === 'SE_83000046' && o.kind === 'key')).toBe(true);
    } finally {
      se.close();
    }
  });
});

describe('soft backend specifics', () => {
  it('writes key and certificate files 0600', () => {
    for (const name of ['SE_83000042.key.pem', 'SE_83000043.pem']) {
      expect(statSync(join(fx.seDir, name)).mode & 0o777, name).toBe(0o600);
    }
    expect(readFileSync(join(fx.seDir, 'SE_83000042.key.pem'), 'utf8')).toContain('BEGIN PRIVATE KEY');
  });

  it('refuses a key file that is not P-256 as foreign, and leaves it in place', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const path = join(fx.seDir, 'SE_83000048.key.pem');
    const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    writeFileSync(path, pem, { mode: 0o600 });
    const se = elements.soft();
    const error = refusal(() => se.generateKeyPair(0x83000048));
    expect(error.kind).toBe('se_foreign_key');
    expect(error.message).toMatch(
      /object 0x83000048 holds a key keyferry-agent did not generate \(it is not a P-256 key\)/,
    );
    expect(readFileSync(path, 'utf8')).toBe(pem);
  });
});

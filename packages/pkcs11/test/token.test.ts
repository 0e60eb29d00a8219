import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openToken, type Token } from '@keyferry/pkcs11';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSofthsmEnv, initTestToken, type SofthsmEnv } from '../../../test/support/softhsm.ts';

let env: SofthsmEnv;
let token: Token;
let userPin: string;

beforeAll(() => {
  env = createSofthsmEnv();
  userPin = initTestToken(env.conf).userPin;
  token = openToken({ module: env.module, tokenLabel: 'aktualizr', pin: userPin });
});

afterAll(() => {
  token?.close();
  env?.cleanup();
});

/** What OpenSC's pkcs11-tool, an independent PKCS#11 client, sees on the token. */
function pkcs11ToolObjects(): string {
  return execFileSync(
    'pkcs11-tool',
    ['--module', env.module, '--token-label', 'aktualizr', '--login', '--pin', userPin, '--list-objects'],
    { env: env.env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  );
}

/** The block pkcs11-tool prints for one object, from its "... Object" line to the next. */
function pkcs11ToolBlock(listing: string, kind: string, label: string): string {
  // Each block ends in a newline, the last one included, so field patterns can anchor on it.
  const blocks = listing.split(/\n(?=\S)/).map((b) => `${b.trimEnd()}\n`);
  const block = blocks.find((b) => b.startsWith(kind) && new RegExp(`label:\\s+${label}\\n`).test(b));
  if (!block) throw new Error(`pkcs11-tool shows no ${kind} '${label}' in:\n${listing}`);
  return block;
}

function selfSignedCertificate(subject: string): Buffer {
  const out = join(env.dir, `${subject.replaceAll(/\W/g, '')}.der`);
  const keyOut = ['-keyout', join(env.dir, 'throwaway.key')];
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', ...keyOut];
  const output = ['-subj', subject, '-days', '1', '-outform', 'DER', '-out', out];
  execFileSync('openssl', ['req', '-x509', ...newKey, ...output], { stdio: 'ignore' });
  return readFileSync(out);
}

describe('key pairs', () => {
  it('generates a P-256 pair that pkcs11-tool sees as sensitive and never extractable', () => {
    const { key, publicKeySpki } = token.generateEcKeyPair({ label: 'SE_83000042', id: Buffer.from([0x01]) });
    expect(key.label).toBe('SE_83000042');
    expect(createPublicKey({ key: publicKeySpki, format: 'der', type: 'spki' }).asymmetricKeyDetails).toEqual(
      { namedCurve: 'prime256v1' },
    );

    const listing = pkcs11ToolObjects();
    const priv = pkcs11ToolBlock(listing, 'Private Key Object; EC', 'SE_83000042');
    expect(priv).toMatch(/ID:\s+01\n/);
    expect(priv).toMatch(/Usage:\s+sign\n/);
    expect(priv).toMatch(/Access:\s+sensitive, always sensitive, never extractable, local/);
    const pub = pkcs11ToolBlock(listing, 'Public Key Object; EC', 'SE_83000042');
    expect(pub).toMatch(/ID:\s+01\n/);
    // The point pkcs11-tool prints (OCTET STRING-wrapped) is the one our SPKI carries.
    const point = /EC_POINT:\s+([0-9a-f]+)/.exec(pub)?.[1];
    expect(point).toBe(`0441${publicKeySpki.subarray(-65).toString('hex')}`);
  });

  it('reports the same protection through its own attribute reader', () => {
    expect(token.keyAttributes({ label: 'SE_83000042' })).toEqual({
      sensitive: true,
      extractable: false,
      alwaysSensitive: true,
      neverExtractable: true,
      private: true,
      token: true,
      sign: true,
    });
  });

  it('refuses to generate over an existing key with the same label or id', () => {
    for (const clash of [
      { label: 'SE_83000042', id: Buffer.from([0x09]) },
      { label: 'other', id: Buffer.from([0x01]) },
    ]) {
      expect(() => token.generateEcKeyPair(clash)).toThrow(
        expect.objectContaining({
          code: 'key_custody_error',
          message: expect.stringMatching(/already has a private key/),
        }),
      );
    }
    expect(token.listObjects().filter((o) => o.class === 'private')).toHaveLength(1);
  });

  it('finds keys by label or id, and says when there is none', () => {
    expect(token.findPrivateKey({ id: Buffer.from([0x01]) })?.label).toBe('SE_83000042');
    expect(token.findPrivateKey({ label: 'SE_83000042' })?.id.toString('hex')).toBe('01');
    expect(token.findPrivateKey({ label: 'SE_83000042', id: Buffer.from([0x02]) })).toBeUndefined();
    expect(() => token.signDigest({ label: 'SE_ffffffff' }, Buffer.alloc(32))).toThrow(
      "token 'aktualizr' has no private key with label 'SE_ffffffff'; generate or provision it first",
    );
  });
});

describe('signing', () => {
  it('signs a digest (raw r||s) that node:crypto verifies with the SPKI', () => {
    const spki = token.publicKeySpki({ id: Buffer.from([0x01]) });
    const data = Buffer.from('keyferry digest test');
    const raw = token.signDigest({ id: Buffer.from([0x01]) }, createHash('sha256').update(data).digest());
    expect(raw).toHaveLength(64);
    const key = { key: spki, format: 'der', type: 'spki', dsaEncoding: 'ieee-p1363' } as const;
    expect(verify('sha256', data, key, raw)).toBe(true);
    expect(verify('sha256', Buffer.from('other data'), key, raw)).toBe(false);
  });

  it('gives a signer whose DER signatures verify and whose key is the token key', async () => {
    const signer = token.signer({ label: 'SE_83000042' });
    const spki = Buffer.from(signer.publicKeySpki);
    expect(spki.equals(token.publicKeySpki({ label: 'SE_83000042' }))).toBe(true);
    for (let i = 0; i < 20; i++) {
      // With twenty signatures, some r or s almost surely has its top bit set, which DER
      // must encode with a leading zero; each must verify.
      const data = Buffer.from(`message ${i}`);
      const signature = await signer.sign(data);
      const key = { key: spki, format: 'der', type: 'spki', dsaEncoding: 'der' } as const;
      expect(verify('sha256', data, key, signature)).toBe(true);
    }
  });

  it('refuses a digest that is not 32 bytes', () => {
    expect(() => token.signDigest({ label: 'SE_83000042' }, Buffer.alloc(20))).toThrow(TypeError);
  });
});

describe('certificates and data', () => {
  it('stores a certificate that pkcs11-tool lists with its subject, and reads it back', () => {
    const der = selfSignedCertificate('/CN=first/OU=demo');
    token.putCertificate({ label: 'SE_83000043', id: Buffer.from([0x03]), der });
    expect(token.getCertificate({ id: Buffer.from([0x03]) })?.equals(der)).toBe(true);
    const block = pkcs11ToolBlock(pkcs11ToolObjects(), 'Certificate Object', 'SE_83000043');
    expect(block).toMatch(/subject:\s+DN: CN\s*=\s*first, OU\s*=\s*demo/);
    expect(block).toMatch(/ID:\s+03\n/);
    // CKA_SERIAL_NUMBER, as pkcs11-tool decodes it, is the serial openssl wrote.
    const serial = execFileSync('openssl', ['x509', '-inform', 'DER', '-noout', '-serial'], { input: der });
    expect(block).toContain(`serial:     ${serial.toString().trim().replace('serial=', '')}\n`);
  });

  it('replaces the certificate stored under the same id', () => {
    const second = selfSignedCertificate('/CN=second');
    token.putCertificate({ label: 'SE_83000043', id: Buffer.from([0x03]), der: second });
    expect(token.getCertificate({ label: 'SE_83000043' })?.equals(second)).toBe(true);
    expect(token.listObjects().filter((o) => o.class === 'certificate')).toEqual([
      { class: 'certificate', label: 'SE_83000043', id: '03' },
    ]);
  });

  it('refuses bytes that are not a certificate', () => {
    expect(() =>
      token.putCertificate({ label: 'bad', id: Buffer.from([0x07]), der: Buffer.from('3003020101', 'hex') }),
    ).toThrow(expect.objectContaining({ code: 'certificate_invalid' }));
  });

  it('stores and replaces a data object such as the simulated SE UID', () => {
    const uid = Buffer.from('04005001eee3ba1ee96e60047e57da0f6880', 'hex');
    expect(token.getData({ label: 'SE_7fff0206' })).toBeUndefined();
    token.putData({ label: 'SE_7fff0206', value: Buffer.alloc(18) });
    token.putData({ label: 'SE_7fff0206', value: uid });
    expect(token.getData({ label: 'SE_7fff0206' })?.equals(uid)).toBe(true);
    expect(token.listObjects().filter((o) => o.class === 'data')).toHaveLength(1);
    expect(pkcs11ToolObjects()).toMatch(/Data object[^\n]*\n(?:\s+.*\n)*?\s+label:\s+'SE_7fff0206'/);
  });

  it('lists every object and deletes by id across classes', () => {
    const summary = token.listObjects().map((o) => `${o.class}:${o.label}:${o.id}`);
    expect(summary.sort()).toEqual([
      'certificate:SE_83000043:03',
      'data:SE_7fff0206:',
      'private:SE_83000042:01',
      'public:SE_83000042:01',
    ]);
    expect(token.deleteObjects({ id: Buffer.from([0x01]) })).toBe(2);
    expect(token.findPrivateKey({ label: 'SE_83000042' })).toBeUndefined();
    expect(pkcs11ToolObjects()).not.toContain('SE_83000042');
  });
});

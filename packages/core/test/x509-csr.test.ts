import { afterAll, describe, expect, it } from 'vitest';
import {
  createCsr,
  KeyferryError,
  MAX_CSR_BYTES,
  type ParsedCsr,
  parseAndVerifyCsr,
  parseCsr,
  toPem,
  verifyCsr,
} from '../src/index.ts';
import { newSigner, openssl, opensslOutput, pemToDer, scratchDir } from './support/openssl.ts';

const dir = scratchDir();
afterAll(() => dir.cleanup());

/** A CSR made by `openssl req -new` with a fresh key of the given algorithm. */
function opensslCsr(keyArgs: string[], subject = '/O=Acme/CN=device 1', extra: string[] = []): Uint8Array {
  const key = dir.path(`key-${Math.random().toString(36).slice(2)}.pem`);
  openssl(['genpkey', ...keyArgs, '-out', key]);
  return pemToDer(openssl(['req', '-new', '-key', key, '-subj', subject, ...extra]));
}

function refusal(fn: () => unknown): KeyferryError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(KeyferryError);
    expect((error as KeyferryError).code).toBe('csr_invalid');
    return error as KeyferryError;
  }
  throw new Error('expected csr_invalid');
}

const P256 = ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'];

describe('createCsr', () => {
  it('makes a request openssl verifies, with the subject and SANs asked for', async () => {
    const signer = newSigner();
    const der = await createCsr({
      subject: { O: 'Acme', CN: 'gw.example' },
      dnsNames: ['gw.example', '*.ota-lite.localhost'],
      signer,
    });
    const file = dir.write('made.csr', toPem(der, 'CERTIFICATE REQUEST'));
    // openssl req -verify exits 0 even on a bad signature (3.0); the verdict is in the text.
    const text = opensslOutput(['req', '-in', file, '-verify', '-noout', '-text']);
    expect(text).toContain('self-signature verify OK');
    expect(text).toContain('Subject: O = Acme, CN = gw.example');
    expect(text).toContain('DNS:gw.example, DNS:*.ota-lite.localhost');
    expect(text).toContain('ecdsa-with-SHA256');
    const parsed = parseAndVerifyCsr(der);
    expect(parsed.subject.text).toBe('CN=gw.example,O=Acme');
    expect(parsed.dnsNames).toEqual(['gw.example', '*.ota-lite.localhost']);
    expect(parsed.publicKeySpki).toEqual(signer.publicKeySpki);
  });

  it('without SANs writes an empty attribute set that openssl accepts', async () => {
    const der = await createCsr({ subject: [['CN', 'x']], signer: newSigner() });
    const out = opensslOutput(['req', '-inform', 'DER', '-verify', '-noout', '-text'], der);
    expect(out).toContain('self-signature verify OK');
    expect(out).toContain('Attributes:');
    expect(parseCsr(der).dnsNames).toEqual([]);
  });

  it('refuses a bad subject before signing', async () => {
    await expect(createCsr({ subject: { C: 'Germany' }, signer: newSigner() })).rejects.toThrow(
      /longer than 2/,
    );
    await expect(createCsr({ subject: {}, signer: newSigner() })).rejects.toThrow(/at least one attribute/);
    await expect(
      createCsr({ subject: { CN: 'x' }, dnsNames: ['bad name'], signer: newSigner() }),
    ).rejects.toThrow(/invalid DNS name/);
  });
});

describe('parseCsr / verifyCsr with openssl-made requests', () => {
  it('accepts a P-256 request from openssl req -new, SANs included', () => {
    const der = opensslCsr(P256, '/O=Acme/CN=device 1', [
      '-addext',
      'subjectAltName=DNS:a.example,DNS:b.example',
    ]);
    const csr = parseAndVerifyCsr(der);
    expect(csr.keyAlgorithm).toBe('P-256');
    expect(csr.subject.attributes).toEqual({ O: 'Acme', CN: 'device 1' });
    expect(csr.subject.rdns.map((rdn) => rdn.map((a) => a.name))).toEqual([['O'], ['CN']]);
    expect(csr.dnsNames).toEqual(['a.example', 'b.example']);
    expect(csr.der).toBe(der);
  });

  it('refuses RSA and P-384 keys by default, saying which key it got', () => {
    const rsa = parseCsr(opensslCsr(['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048']));
    expect(rsa.keyAlgorithm).toBe('RSA');
    expect(refusal(() => verifyCsr(rsa)).message).toBe('CSR key is RSA; a P-256 key is required');
    const p384 = parseCsr(opensslCsr(['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384']));
    expect(p384.keyAlgorithm).toBe('P-384');
    expect(refusal(() => verifyCsr(p384)).message).toBe('CSR key is P-384; a P-256 key is required');
    // The signatures themselves are good: asking for those algorithms accepts them.
    expect(verifyCsr(rsa, { keyAlgorithm: 'any' })).toBe(rsa);
    expect(verifyCsr(p384, { keyAlgorithm: 'P-384' })).toBe(p384);
  });

  it('refuses a request whose signature does not verify', () => {
    const der = opensslCsr(P256).slice();
    der[der.length - 5]! ^= 0x01; // inside s of the ECDSA signature
    expect(opensslOutput(['req', '-inform', 'DER', '-verify', '-noout'], der)).toMatch(
      /did not match|verify failure/,
    );
    const csr = parseCsr(der);
    expect(refusal(() => verifyCsr(csr)).message).toBe(
      "CSR signature (ecdsa-with-SHA256) does not verify with the CSR's public key",
    );
  });

  it('refuses a request whose subject was changed after signing', () => {
    const der = opensslCsr(P256, '/CN=aaaa').slice();
    const at = Buffer.from(der).indexOf('aaaa');
    der[at] = 0x62; // 'b'
    expect(refusal(() => parseAndVerifyCsr(der)).message).toMatch(/does not verify/);
  });

  it('refuses a signature that belongs to another key', async () => {
    const csr = parseCsr(await createCsr({ subject: { CN: 'x' }, signer: newSigner() }));
    const other = parseCsr(await createCsr({ subject: { CN: 'x' }, signer: newSigner() }));
    const forged: ParsedCsr = { ...csr, publicKeySpki: other.publicKeySpki };
    expect(refusal(() => verifyCsr(forged)).message).toMatch(/does not verify/);
  });
});

describe('parseCsr refusals', () => {
  it('garbage is not DER', () => {
    expect(refusal(() => parseCsr(Uint8Array.of(1, 2, 3, 4))).message).toMatch(
      /^CSR is not valid DER: expected tag 0x30/,
    );
    expect(refusal(() => parseCsr(new Uint8Array())).message).toMatch(/not valid DER: truncated/);
  });

  it('truncated and padded requests are not DER', async () => {
    const der = await createCsr({ subject: { CN: 'x' }, signer: newSigner() });
    expect(refusal(() => parseCsr(der.subarray(0, der.length - 10))).message).toMatch(/runs past the end/);
    const padded = new Uint8Array(der.length + 2);
    padded.set(der);
    expect(refusal(() => parseCsr(padded)).message).toMatch(/2 trailing bytes/);
  });

  it('PEM text is pointed out', async () => {
    const pem = toPem(await createCsr({ subject: { CN: 'x' }, signer: newSigner() }), 'CERTIFICATE REQUEST');
    expect(refusal(() => parseCsr(new TextEncoder().encode(pem))).message).toMatch(/PEM text, not DER/);
  });

  it('a certificate is not a request', () => {
    const key = dir.path('cert-key.pem');
    openssl(['genpkey', ...P256, '-out', key]);
    const cert = pemToDer(openssl(['req', '-new', '-x509', '-key', key, '-subj', '/CN=x', '-days', '1']));
    expect(refusal(() => parseCsr(cert)).message).toBe(
      'this is an X.509 certificate, not a certification request',
    );
    const notCsr = Uint8Array.of(0x30, 0x03, 0x02, 0x01, 0x00);
    expect(refusal(() => parseCsr(notCsr)).message).toMatch(/^not a PKCS#10 certification request/);
  });

  it('enforces MAX_CSR_BYTES at the edge', () => {
    expect(MAX_CSR_BYTES).toBe(8192);
    const big = new Uint8Array(MAX_CSR_BYTES + 1);
    expect(refusal(() => parseCsr(big)).message).toBe('CSR is 8193 bytes; the limit is 8192');
    // Exactly at the limit it is read (and refused for its content, not its size).
    const atLimit = new Uint8Array(MAX_CSR_BYTES);
    atLimit.set([0x30, 0x82, 0x1f, 0xfc]);
    expect(refusal(() => parseCsr(atLimit)).message).not.toMatch(/limit/);
  });

  it('a version other than 0 is refused', async () => {
    const der = (await createCsr({ subject: { CN: 'x' }, signer: newSigner() })).slice();
    // SEQUENCE { SEQUENCE { INTEGER 0 ...: the version octet follows 30 81 xx 30 81 xx 02 01 or 30 xx 30 xx 02 01.
    const at = Buffer.from(der).indexOf(Buffer.from([0x02, 0x01, 0x00]));
    der[at + 2] = 0x01;
    expect(refusal(() => parseCsr(der)).message).toBe('CSR version 1 is not 0 (PKCS#10 v1)');
  });
});

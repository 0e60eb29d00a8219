import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  canonicalP256Spki,
  type ExtensionsSpec,
  factoryRootProfile,
  issueCertificate,
  nativeAnchor,
  parseCertificate,
  type Signer,
  verifyChain,
  verifyIssuedByAnchor,
} from '../src/index.ts';
import { newSigner } from './support/openssl.ts';

/**
 * The native path must never say yes where the full verifier says no: every case is judged by
 * both, at the same time, and a native refusal is only ever "ask verifyChain".
 */
const now = new Date('2027-01-01T00:00:00Z');
const later = new Date('2027-06-01T00:00:00Z');
const rootSigner = newSigner();
const root = await factoryRootProfile({ factory: 'vendor', signer: rootSigner, now });
const anchor = nativeAnchor(root)!;

async function leaf(options: {
  signer?: Signer;
  issuerCert?: Uint8Array;
  days?: number;
  extensions?: ExtensionsSpec;
}) {
  const issuerCert = options.issuerCert ?? root;
  const signer = options.signer ?? rootSigner;
  return issueCertificate({
    issuer: { name: parseCertificate(issuerCert).subject.der, publicKeySpki: signer.publicKeySpki },
    subject: { OU: '935389312472', CN: '04005001e4a06f3a2a6b5a3c2f6e1d0c2b3a' },
    subjectPublicKeySpki: newSigner().publicKeySpki,
    notBefore: now,
    notAfter: new Date(now.getTime() + (options.days ?? 365) * 86_400_000),
    extensions: options.extensions ?? { keyUsage: ['digitalSignature'], extKeyUsage: ['clientAuth'] },
    signer,
  });
}

function verdicts(der: Uint8Array, at: Date, anchors = [anchor], anchorDers = [root]) {
  const native = verifyIssuedByAnchor(new X509Certificate(der), der, anchors, at, 'clientAuth');
  let full = true;
  try {
    verifyChain(der, [], anchorDers, at, { purpose: 'clientAuth' });
  } catch {
    full = false;
  }
  return { native, full };
}

describe('verifyIssuedByAnchor (the device-link identity hot path) against verifyChain', () => {
  it('accepts a leaf the anchor issued, as verifyChain does', async () => {
    expect(verdicts(await leaf({}), later)).toEqual({ native: true, full: true });
    // no extKeyUsage at all is any purpose, for both
    expect(verdicts(await leaf({ extensions: {} }), later)).toEqual({ native: true, full: true });
  });

  it('refuses an expired leaf and one not yet valid', async () => {
    const der = await leaf({ days: 30 });
    expect(verdicts(der, later)).toEqual({ native: false, full: false });
    expect(verdicts(der, new Date('2026-12-01T00:00:00Z'))).toEqual({ native: false, full: false });
  });

  it('refuses a leaf for another purpose', async () => {
    const der = await leaf({ extensions: { extKeyUsage: ['serverAuth'] } });
    expect(verdicts(der, later)).toEqual({ native: false, full: false });
  });

  it('refuses a leaf signed by another key under the anchor name, and a tampered one', async () => {
    const forged = await leaf({ signer: newSigner(), issuerCert: root });
    // the anchor's name, another key: what a forger without the vendor CA key can make
    expect(verdicts(forged, later)).toEqual({ native: false, full: false });
    const tampered = (await leaf({})).slice();
    tampered[tampered.length - 5]! ^= 0x01;
    expect(verdicts(tampered, later)).toEqual({ native: false, full: false });
  });

  it('leaves an anchor that may not issue to verifyChain', async () => {
    const s = newSigner();
    const notCa = await issueCertificate({
      issuer: { name: { CN: 'self' }, publicKeySpki: s.publicKeySpki },
      subject: { CN: 'self' },
      subjectPublicKeySpki: s.publicKeySpki,
      notBefore: now,
      notAfter: later,
      extensions: { basicConstraints: { ca: false } },
      signer: s,
    });
    expect(nativeAnchor(notCa)).toBeUndefined();
    expect(nativeAnchor(Uint8Array.of(1, 2, 3))).toBeUndefined();
  });
});

describe('canonicalP256Spki', () => {
  it('reads the P-256 key of a leaf as node:crypto exports it, and nothing else', async () => {
    const der = await leaf({});
    const exported = new X509Certificate(der).publicKey.export({ format: 'der', type: 'spki' });
    expect(Buffer.from(canonicalP256Spki(der)!)).toEqual(exported);
    // a P-384 key, a truncated certificate and garbage are left to the caller
    const p384 = execFileSync('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-384',
      '-nodes',
      '-keyout',
      '/dev/null',
      '-subj',
      '/CN=x',
      '-days',
      '1',
      '-outform',
      'DER',
    ]);
    expect(canonicalP256Spki(new Uint8Array(p384))).toBeUndefined();
    expect(canonicalP256Spki(der.subarray(0, 100))).toBeUndefined();
    expect(canonicalP256Spki(Uint8Array.of(1, 2, 3))).toBeUndefined();
  });
});

import { afterAll, describe, expect, it } from 'vitest';
import {
  createCsr,
  factoryRootProfile,
  intermediateCaFromCsr,
  issueCertificate,
  KeyferryError,
  MAX_CHAIN_INTERMEDIATES,
  parseCertificate,
  type Signer,
  selfSignedCa,
  serverCertificate,
  toPem,
  verifyChain,
} from '../src/index.ts';
import { newSigner, openssl, opensslFails, scratchDir } from './support/openssl.ts';

const dir = scratchDir();
afterAll(() => dir.cleanup());
const now = new Date('2027-01-01T00:00:00Z');
const later = new Date('2027-06-01T00:00:00Z');

const rootSigner = newSigner();
const root = await factoryRootProfile({ factory: 'acme', signer: rootSigner, now });
const caSigner = newSigner();
const ca = await intermediateCaFromCsr({
  csr: await createCsr({ subject: { CN: 'fio-device-gateway-ca' }, signer: caSigner }),
  issuerCert: root,
  signer: rootSigner,
  now,
});

function leafFrom(issuerCert: Uint8Array, signer: Signer, extra: { days?: number; name?: string } = {}) {
  return serverCertificate({
    issuerCert,
    signer,
    publicKeySpki: newSigner().publicKeySpki,
    dnsNames: [extra.name ?? 'leaf.example'],
    validity: { days: extra.days ?? 365 },
    now,
  });
}

function distrust(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(KeyferryError);
    expect((error as KeyferryError).code).toBe('untrusted_chain');
    return (error as Error).message;
  }
  throw new Error('expected untrusted_chain');
}

/** openssl's own verdict on the same chain, at the same time. */
function opensslVerify(leaf: Uint8Array, intermediates: Uint8Array[], anchor: Uint8Array, at: Date): string {
  const args = [
    'verify',
    '-attime',
    String(Math.floor(at.getTime() / 1000)),
    '-CAfile',
    dir.write('anchor.pem', toPem(anchor, 'CERTIFICATE')),
  ];
  if (intermediates.length > 0)
    args.push(
      '-untrusted',
      dir.write('chain.pem', intermediates.map((c) => toPem(c, 'CERTIFICATE')).join('')),
    );
  args.push(dir.write('leaf.pem', toPem(leaf, 'CERTIFICATE')));
  try {
    return openssl(args);
  } catch {
    return opensslFails(args);
  }
}

describe('verifyChain', () => {
  it('returns the path leaf → intermediate → anchor, whatever the order of the inputs', async () => {
    const leaf = await leafFrom(ca, caSigner);
    const otherRoot = await selfSignedCa({ subject: { CN: 'other' }, signer: newSigner(), years: 5, now });
    const path = verifyChain(leaf, [root, ca], [otherRoot, root], later, { purpose: 'serverAuth' });
    expect(path.map((c) => c.subject.text)).toEqual([
      'CN=leaf.example',
      'CN=fio-device-gateway-ca',
      'CN=Factory-CA,OU=acme',
    ]);
    expect(opensslVerify(leaf, [ca], root, later)).toContain('OK');
  });

  it('refuses an expired leaf and a leaf not yet valid, naming the certificate and time', async () => {
    const leaf = await leafFrom(ca, caSigner, { days: 30 });
    expect(distrust(() => verifyChain(leaf, [ca], [root], later))).toBe(
      'certificate CN=leaf.example expired at 2027-01-31T00:00:00.000Z',
    );
    expect(opensslVerify(leaf, [ca], root, later)).toMatch(/certificate has expired/);
    expect(distrust(() => verifyChain(leaf, [ca], [root], new Date('2026-12-01T00:00:00Z')))).toMatch(
      /is not valid before 2026-12-31T23:59:00/,
    );
  });

  it('refuses an expired intermediate', async () => {
    const leaf = await leafFrom(ca, caSigner);
    const afterCa = new Date('2037-01-02T00:00:00Z');
    expect(distrust(() => verifyChain(leaf, [ca], [root], afterCa))).toMatch(/expired/);
  });

  it('refuses a chain to another anchor and a missing intermediate', async () => {
    const leaf = await leafFrom(ca, caSigner);
    const otherRoot = await factoryRootProfile({ factory: 'acme', signer: newSigner(), now });
    // Same name as the real root, different key: the name matches, the signature does not.
    expect(distrust(() => verifyChain(leaf, [ca], [otherRoot], later))).toMatch(
      /signature of CN=fio-device-gateway-ca does not verify with the key of CN=Factory-CA,OU=acme/,
    );
    expect(opensslVerify(leaf, [ca], otherRoot, later)).toMatch(
      /signature failure|unable to get local issuer/,
    );
    expect(distrust(() => verifyChain(leaf, [], [root], later))).toBe(
      'untrusted certificate chain: no trusted issuer CN=fio-device-gateway-ca found for CN=leaf.example',
    );
  });

  it('refuses a tampered leaf', async () => {
    const leaf = (await leafFrom(ca, caSigner)).slice();
    const at = Buffer.from(leaf).indexOf('leaf.example');
    leaf[at] = 0x4c; // 'L'
    expect(distrust(() => verifyChain(leaf, [ca], [root], later))).toMatch(
      /signature of CN=Leaf.example does not verify/,
    );
  });

  it('refuses a leaf used as an issuer (not a CA)', async () => {
    const leafSigner = newSigner();
    const leaf = await issueCertificate({
      issuer: { name: parseCertificate(ca).subject.der, publicKeySpki: caSigner.publicKeySpki },
      subject: { CN: 'pretend-ca' },
      subjectPublicKeySpki: leafSigner.publicKeySpki,
      notBefore: now,
      notAfter: later,
      extensions: { basicConstraints: { ca: false } },
      signer: caSigner,
    });
    const below = await issueCertificate({
      issuer: { name: { CN: 'pretend-ca' }, publicKeySpki: leafSigner.publicKeySpki },
      subject: { CN: 'victim' },
      subjectPublicKeySpki: newSigner().publicKeySpki,
      notBefore: now,
      notAfter: later,
      extensions: {},
      signer: leafSigner,
    });
    expect(distrust(() => verifyChain(below, [leaf, ca], [root], later))).toMatch(
      /issuer CN=pretend-ca is not a CA/,
    );
    expect(opensslVerify(below, [leaf, ca], root, later)).toMatch(
      /invalid CA certificate|unable to get local issuer/,
    );
  });

  it('enforces the intermediate pathlen 0, as openssl does', async () => {
    const subSigner = newSigner();
    const sub = await issueCertificate({
      issuer: { name: parseCertificate(ca).subject.der, publicKeySpki: caSigner.publicKeySpki },
      subject: { CN: 'sub-ca' },
      subjectPublicKeySpki: subSigner.publicKeySpki,
      notBefore: now,
      notAfter: new Date('2030-01-01T00:00:00Z'),
      extensions: { basicConstraints: { ca: true }, keyUsage: ['keyCertSign'] },
      signer: caSigner,
    });
    const leaf = await leafFrom(sub, subSigner);
    expect(distrust(() => verifyChain(leaf, [sub, ca], [root], later))).toBe(
      'untrusted certificate chain: issuer CN=fio-device-gateway-ca allows 0 intermediate(s) below it, the chain has 1',
    );
    expect(opensslVerify(leaf, [sub, ca], root, later)).toMatch(/path length constraint exceeded/);
  });

  it('refuses a CA whose keyUsage lacks keyCertSign', async () => {
    const s = newSigner();
    const weird = await issueCertificate({
      issuer: { name: parseCertificate(root).subject.der, publicKeySpki: rootSigner.publicKeySpki },
      subject: { CN: 'crl-only' },
      subjectPublicKeySpki: s.publicKeySpki,
      notBefore: now,
      notAfter: new Date('2030-01-01T00:00:00Z'),
      extensions: { basicConstraints: { ca: true }, keyUsage: ['cRLSign'] },
      signer: rootSigner,
    });
    // The profile functions refuse such an issuer; the generic call lets the test make one.
    await expect(leafFrom(weird, s)).rejects.toThrow(/not a CA that may sign certificates/);
    const leaf = await issueCertificate({
      issuer: { name: parseCertificate(weird).subject.der, publicKeySpki: s.publicKeySpki },
      subject: { CN: 'leaf' },
      subjectPublicKeySpki: newSigner().publicKeySpki,
      notBefore: now,
      notAfter: later,
      extensions: {},
      signer: s,
    });
    expect(distrust(() => verifyChain(leaf, [weird], [root], later))).toMatch(/keyUsage lacks keyCertSign/);
    expect(opensslVerify(leaf, [weird], root, later)).toMatch(
      /invalid CA certificate|key usage does not include certificate signing/,
    );
  });

  it('checks the leaf purpose only when asked', async () => {
    const leaf = await leafFrom(ca, caSigner);
    expect(verifyChain(leaf, [ca], [root], later)).toHaveLength(3);
    expect(distrust(() => verifyChain(leaf, [ca], [root], later, { purpose: 'clientAuth' }))).toBe(
      'certificate CN=leaf.example is not valid for clientAuth',
    );
  });

  it('refuses input that does not parse with certificate_invalid, naming which one', async () => {
    const leaf = await leafFrom(ca, caSigner);
    expect(() => verifyChain(leaf, [Uint8Array.of(1, 2)], [root], later)).toThrow(
      expect.objectContaining({
        code: 'certificate_invalid',
        message: expect.stringMatching(/^intermediate certificate #1: /),
      }),
    );
    expect(() => verifyChain(leaf.subarray(0, 50), [ca], [root], later)).toThrow(
      expect.objectContaining({
        code: 'certificate_invalid',
        message: expect.stringMatching(/^leaf certificate: /),
      }),
    );
  });

  it('limits the number of intermediates', async () => {
    const leaf = await leafFrom(ca, caSigner);
    const many = Array.from({ length: MAX_CHAIN_INTERMEDIATES + 1 }, () => ca);
    expect(distrust(() => verifyChain(leaf, many, [root], later))).toMatch(/the limit is 8/);
  });
});

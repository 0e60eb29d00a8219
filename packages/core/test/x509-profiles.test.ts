import { afterAll, describe, expect, it } from 'vitest';
import {
  createCsr,
  factoryRootProfile,
  intermediateCaFromCsr,
  issueCertificate,
  NOT_BEFORE_BACKDATE_MS,
  parseCertificate,
  selfSignedCa,
  serverCertificate,
  tlsServerFromCsr,
  toPem,
} from '../src/index.ts';
import { newSigner, openssl, opensslFails, scratchDir } from './support/openssl.ts';

const dir = scratchDir();
afterAll(() => dir.cleanup());
const now = new Date('2026-03-01T12:00:00.250Z');

function text(der: Uint8Array): string {
  return openssl(['x509', '-inform', 'DER', '-noout', '-text'], der);
}

const rootSigner = newSigner();
const root = await factoryRootProfile({ factory: 'acme-prod', signer: rootSigner, now });
const rootFile = dir.write('root.pem', toPem(root, 'CERTIFICATE'));

describe('factoryRootProfile', () => {
  it('is the self-signed P-256 Factory-CA root fioctl made, as openssl reads it', () => {
    const out = text(root);
    expect(out).toContain('Subject: OU = acme-prod, CN = Factory-CA');
    expect(out).toContain('Issuer: OU = acme-prod, CN = Factory-CA');
    expect(out).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE\n/);
    expect(out).toMatch(/X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign\n/);
    expect(out).toContain('NIST CURVE: P-256');
    expect(out).toContain('Signature Algorithm: ecdsa-with-SHA256');
    expect(out).toContain('Not Before: Mar  1 11:59:00 2026 GMT');
    expect(out).toContain('Not After : Mar  1 12:00:00 2046 GMT');
    // openssl accepts it as its own trust anchor.
    expect(openssl(['verify', '-CAfile', rootFile, rootFile])).toContain('OK');
  });

  it('has a random positive serial of at most 160 bits and SKI equal to AKI', async () => {
    const a = parseCertificate(root);
    const b = parseCertificate(await factoryRootProfile({ factory: 'acme-prod', signer: rootSigner, now }));
    expect(a.serialHex).not.toBe(b.serialHex);
    expect(BigInt('0x' + a.serialHex)).toBeLessThan(2n ** 159n);
    expect(BigInt('0x' + a.serialHex)).toBeGreaterThan(2n ** 100n); // fails with chance 2^-59
    expect(a.ski).toBeDefined();
    expect(a.aki).toBe(a.ski);
    expect(a.subjectAttributes).toEqual({ OU: 'acme-prod', CN: 'Factory-CA' });
    expect(a.notBefore.getTime()).toBe(Date.parse('2026-03-01T12:00:00Z') - NOT_BEFORE_BACKDATE_MS);
  });

  it('refuses an empty factory name', async () => {
    await expect(factoryRootProfile({ factory: '', signer: rootSigner })).rejects.toThrow(TypeError);
  });
});

describe('intermediateCaFromCsr', () => {
  it('copies the CSR subject, is CA pathlen 0 for 10 years, and chains to the root', async () => {
    const caSigner = newSigner();
    const csr = await createCsr({
      subject: { O: 'acme-prod', CN: 'fio-device-gateway-ca' },
      signer: caSigner,
    });
    const der = await intermediateCaFromCsr({ csr, issuerCert: root, signer: rootSigner, now });
    const out = text(der);
    expect(out).toContain('Subject: O = acme-prod, CN = fio-device-gateway-ca');
    expect(out).toContain('Issuer: OU = acme-prod, CN = Factory-CA');
    expect(out).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0\n/);
    expect(out).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign\n/);
    expect(out).toContain('Not After : Mar  1 12:00:00 2036 GMT');
    const file = dir.write('inter.pem', toPem(der, 'CERTIFICATE'));
    expect(openssl(['verify', '-CAfile', rootFile, file])).toContain('OK');
    const parsed = parseCertificate(der);
    expect(parsed.aki).toBe(parseCertificate(root).ski);
    expect(parsed.pathLen).toBe(0);
    expect(parsed.spki).toEqual(caSigner.publicKeySpki);
  });

  it('refuses a CSR with a bad signature or a non-P-256 key, and an issuer that is not a CA', async () => {
    const csr = (await createCsr({ subject: { CN: 'x' }, signer: newSigner() })).slice();
    csr[csr.length - 3]! ^= 1;
    await expect(intermediateCaFromCsr({ csr, issuerCert: root, signer: rootSigner })).rejects.toMatchObject({
      code: 'csr_invalid',
    });
    const leafSigner = newSigner();
    const leaf = await serverCertificate({
      issuerCert: root,
      signer: rootSigner,
      publicKeySpki: leafSigner.publicKeySpki,
      dnsNames: ['a.example'],
    });
    const good = await createCsr({ subject: { CN: 'y' }, signer: newSigner() });
    await expect(
      intermediateCaFromCsr({ csr: good, issuerCert: leaf, signer: leafSigner }),
    ).rejects.toMatchObject({
      code: 'certificate_invalid',
      message: 'issuer CN=a.example is not a CA that may sign certificates',
    });
  });

  it('refuses a signer whose key is not the issuer key', async () => {
    const csr = await createCsr({ subject: { CN: 'x' }, signer: newSigner() });
    await expect(intermediateCaFromCsr({ csr, issuerCert: root, signer: newSigner() })).rejects.toThrow(
      "the signer's key is not the issuer's key",
    );
  });
});

describe('TLS server profiles', () => {
  it('tlsServerFromCsr: SANs, digitalSignature critical, serverAuth, CA:false; openssl accepts it as sslserver', async () => {
    const signer = newSigner();
    const csr = await createCsr({ subject: { CN: 'acme-prod.ota-lite.localhost' }, signer });
    const der = await tlsServerFromCsr({
      csr,
      issuerCert: root,
      signer: rootSigner,
      dnsNames: ['acme-prod.ota-lite.localhost', 'ota-lite.localhost'],
      now,
    });
    const out = text(der);
    expect(out).toContain('Subject: CN = acme-prod.ota-lite.localhost');
    expect(out).toContain('DNS:acme-prod.ota-lite.localhost, DNS:ota-lite.localhost');
    expect(out).toMatch(/Key Usage: critical\s+Digital Signature\n/);
    expect(out).toMatch(/Extended Key Usage: \s+TLS Web Server Authentication\n/);
    expect(out).toMatch(/Basic Constraints: \s+CA:FALSE\n/);
    const file = dir.write('tls.pem', toPem(der, 'CERTIFICATE'));
    expect(openssl(['verify', '-purpose', 'sslserver', '-CAfile', rootFile, file])).toContain('OK');
    expect(opensslFails(['verify', '-purpose', 'sslclient', '-CAfile', rootFile, file])).toMatch(
      /unsuitable certificate purpose/,
    );
  });

  it('serverCertificate: wildcard SAN and IP address, CN defaults to the first name', async () => {
    const serviceSigner = newSigner();
    const serviceCa = await selfSignedCa({
      subject: { O: 'keyferry', CN: 'keyferry service CA' },
      signer: serviceSigner,
      years: 10,
      now,
    });
    const key = newSigner();
    const der = await serverCertificate({
      issuerCert: serviceCa,
      signer: serviceSigner,
      publicKeySpki: key.publicKeySpki,
      dnsNames: ['*.device-link.localhost'],
      ipAddresses: ['127.0.0.1'],
      validity: { days: 30 },
      now,
    });
    const parsed = parseCertificate(der);
    expect(parsed.subject.text).toBe('CN=*.device-link.localhost');
    expect(parsed.dnsNames).toEqual(['*.device-link.localhost']);
    expect(parsed.ipAddresses).toEqual(['127.0.0.1']);
    expect(parsed.notAfter.toISOString()).toBe('2026-03-31T12:00:00.000Z');
    const caFile = dir.write('service-ca.pem', toPem(serviceCa, 'CERTIFICATE'));
    const file = dir.write('device-link.pem', toPem(der, 'CERTIFICATE'));
    const out = openssl([
      'verify',
      '-purpose',
      'sslserver',
      '-attime',
      String(Math.floor(now.getTime() / 1000) + 60),
      '-verify_hostname',
      'abcd.device-link.localhost',
      '-CAfile',
      caFile,
      file,
    ]);
    expect(out).toContain('OK');
  });

  it('refuses a certificate without names', async () => {
    await expect(
      serverCertificate({
        issuerCert: root,
        signer: rootSigner,
        publicKeySpki: newSigner().publicKeySpki,
        dnsNames: [],
      }),
    ).rejects.toThrow(/at least one DNS name/);
  });
});

describe('dates (RFC 5280 §4.1.2.5)', () => {
  it('writes UTCTime through 2049 and GeneralizedTime from 2050, and reads both back', async () => {
    const signer = newSigner();
    const der = await selfSignedCa({
      subject: { CN: 'crosses 2050' },
      signer,
      years: 10,
      now: new Date('2045-06-15T00:00:00Z'),
    });
    const hex = Buffer.from(der).toString('hex');
    expect(hex).toContain(Buffer.from('450614235900Z').toString('hex'));
    expect(hex).toContain('180f' + Buffer.from('20550615000000Z').toString('hex'));
    const out = text(der);
    expect(out).toContain('Not Before: Jun 14 23:59:00 2045 GMT');
    expect(out).toContain('Not After : Jun 15 00:00:00 2055 GMT');
    const parsed = parseCertificate(der);
    expect(parsed.notAfter.toISOString()).toBe('2055-06-15T00:00:00.000Z');
  });

  it('generic issuance refuses inverted validity and a zero serial', async () => {
    const signer = newSigner();
    const base = {
      issuer: { name: { CN: 'x' }, publicKeySpki: signer.publicKeySpki },
      subject: { CN: 'x' },
      subjectPublicKeySpki: signer.publicKeySpki,
      extensions: {},
      signer,
    };
    await expect(issueCertificate({ ...base, notBefore: now, notAfter: now })).rejects.toThrow(
      /notAfter must be after/,
    );
    const later = new Date(now.getTime() + 1000);
    await expect(
      issueCertificate({ ...base, notBefore: now, notAfter: later, serial: new Uint8Array(3) }),
    ).rejects.toThrow(/positive/);
    await expect(
      issueCertificate({ ...base, notBefore: now, notAfter: later, serial: new Uint8Array(21).fill(1) }),
    ).rejects.toThrow(/at most 20 octets/);
    // 20 octets with the top bit set need a sign octet: 21 content octets, refused.
    await expect(
      issueCertificate({ ...base, notBefore: now, notAfter: later, serial: new Uint8Array(20).fill(0x80) }),
    ).rejects.toThrow(/at most 20 octets/);
    const ok = await issueCertificate({
      ...base,
      notBefore: now,
      notAfter: later,
      serial: Uint8Array.of(0x00, 0x80),
    });
    expect(parseCertificate(ok).serialHex).toBe('80');
    expect(openssl(['x509', '-inform', 'DER', '-noout', '-serial'], ok).trim()).toBe('serial=80');
  });
});

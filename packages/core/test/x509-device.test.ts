import { createHash, generateKeyPairSync } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import {
  createCsr,
  DEVICE_EXTENSIONS,
  type DeviceId,
  deviceCertificate,
  deviceCertificateGeneric,
  deviceCertificateTemplate,
  deviceSubject,
  deviceTbsCertificate,
  ecdsaRawToDer,
  factoryRootProfile,
  intermediateCaFromCsr,
  issueDeviceCertificate,
  issuerFromCertificate,
  KeyferryError,
  parseCertificate,
  parseDeviceId,
  type Signer,
  tbsCertificateDer,
  toPem,
  validityFor,
  verifyCertificateSignature,
  verifyChain,
} from '../src/index.ts';
import { newSigner, openssl, opensslFails, scratchDir } from './support/openssl.ts';

const dir = scratchDir();
afterAll(() => dir.cleanup());

const rootSigner = newSigner();
const caSigner = newSigner();
const root = await factoryRootProfile({ factory: 'acme', signer: rootSigner });
const caCsr = await createCsr({ subject: { O: 'acme', CN: 'fio-device-gateway-ca' }, signer: caSigner });
const issuerCert = await intermediateCaFromCsr({ csr: caCsr, issuerCert: root, signer: rootSigner });
const deviceId = parseDeviceId('0x04005001eee3ba1ee96e60047e57da0f6880');

/**
 * ECDSA signatures are randomized, so comparing whole certificates needs a signer whose output
 * depends only on its input. This one returns a well-formed ECDSA-Sig-Value made of hashes.
 */
function deterministic(signer: Signer): Signer {
  return {
    publicKeySpki: signer.publicKeySpki,
    sign: async (data) => {
      const r = createHash('sha256').update(data).digest();
      const s = createHash('sha256').update(r).digest();
      return ecdsaRawToDer(Buffer.concat([r, s]));
    },
  };
}

describe('device certificate profile (docs/device-link.md)', () => {
  it('has CN = UID hex, OU = factory, serialNumber = decimal id, clientAuth, and openssl verifies it', async () => {
    const key = newSigner();
    const template = deviceCertificateTemplate({ issuerCert, factory: 'acme' });
    const der = await deviceCertificate({
      template,
      signer: caSigner,
      deviceId,
      publicKeySpki: key.publicKeySpki,
    });
    const out = openssl(['x509', '-inform', 'DER', '-noout', '-text'], der);
    expect(out).toContain(
      'Subject: OU = acme, CN = 04005001eee3ba1ee96e60047e57da0f6880, serialNumber = 348555492004256518532939906410866457667712',
    );
    expect(out).toContain('Issuer: O = acme, CN = fio-device-gateway-ca');
    expect(out).toMatch(/Key Usage: critical\s+Digital Signature\n/);
    expect(out).toMatch(/Extended Key Usage: \s+TLS Web Client Authentication\n/);
    expect(out).toMatch(/Basic Constraints: \s+CA:FALSE\n/);
    const rootFile = dir.write('root.pem', toPem(root, 'CERTIFICATE'));
    const caFile = dir.write('ca.pem', toPem(issuerCert, 'CERTIFICATE'));
    const devFile = dir.write('dev.pem', toPem(der, 'CERTIFICATE'));
    expect(
      openssl(['verify', '-purpose', 'sslclient', '-CAfile', rootFile, '-untrusted', caFile, devFile]),
    ).toContain('OK');
    // The intermediate's pathlen 0 is honoured by openssl too: the device cert cannot sign.
    expect(
      opensslFails(['verify', '-purpose', 'sslserver', '-CAfile', rootFile, '-untrusted', caFile, devFile]),
    ).toMatch(/unsuitable certificate purpose/);
    const parsed = parseCertificate(der);
    expect(parsed.subjectAttributes).toEqual({
      OU: 'acme',
      CN: '04005001eee3ba1ee96e60047e57da0f6880',
      serialNumber: '348555492004256518532939906410866457667712',
    });
    expect(parsed.serialHex.length).toBeLessThanOrEqual(32);
    expect(parsed.aki).toBe(parseCertificate(issuerCert).ski);
    expect(parsed.notAfter.getUTCFullYear() - new Date().getUTCFullYear()).toBe(20);
    expect(verifyChain(der, [issuerCert], [root], new Date(), { purpose: 'clientAuth' })).toHaveLength(3);
  });

  it('takes a validity in seconds, to whole seconds, notBefore backdated a minute', () => {
    const v = validityFor(new Date('2026-12-02T14:00:00.750Z'), { seconds: 120 });
    expect(v.notAfter.toISOString()).toBe('2026-12-02T14:02:00.000Z');
    expect(v.notBefore.toISOString()).toBe('2026-12-02T13:59:00.000Z');
    expect(() => validityFor(new Date(), { seconds: 0 })).toThrow(
      'validity seconds must be a positive integer',
    );
  });

  it('uses the configured validity in days', async () => {
    const now = new Date('2030-01-01T00:00:00Z');
    const template = deviceCertificateTemplate({ issuerCert, factory: 'acme', validity: { days: 90 } });
    const der = await deviceCertificate({
      template,
      signer: caSigner,
      deviceId,
      publicKeySpki: newSigner().publicKeySpki,
      now,
    });
    expect(parseCertificate(der).notAfter.toISOString()).toBe('2030-04-01T00:00:00.000Z');
  });

  it('refuses a key that is not P-256, a signer that is not the CA, and a hand-made device id', async () => {
    const template = deviceCertificateTemplate({ issuerCert, factory: 'acme' });
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey;
    const p384Spki = Uint8Array.from(p384.export({ format: 'der', type: 'spki' }));
    await expect(
      deviceCertificate({ template, signer: caSigner, deviceId, publicKeySpki: p384Spki }),
    ).rejects.toMatchObject({
      code: 'csr_invalid',
      message: 'device key must be a P-256 key (uncompressed point)',
    });
    await expect(
      deviceCertificateGeneric({
        issuerCert,
        factory: 'acme',
        signer: caSigner,
        deviceId,
        publicKeySpki: p384Spki,
      }),
    ).rejects.toThrow(KeyferryError);
    const key = newSigner();
    await expect(
      deviceCertificate({ template, signer: rootSigner, deviceId, publicKeySpki: key.publicKeySpki }),
    ).rejects.toThrow(/not the template issuer's key/);
    const fake = { hex: 'ZZ', decimal: '1' } as DeviceId;
    await expect(
      deviceCertificate({ template, signer: caSigner, deviceId: fake, publicKeySpki: key.publicKeySpki }),
    ).rejects.toThrow(/parseDeviceId/);
  });

  it('refuses to build a template on a certificate that is not a CA', async () => {
    const leaf = await deviceCertificate({
      template: deviceCertificateTemplate({ issuerCert, factory: 'acme' }),
      signer: caSigner,
      deviceId,
      publicKeySpki: newSigner().publicKeySpki,
    });
    expect(() => deviceCertificateTemplate({ issuerCert: leaf, factory: 'acme' })).toThrow(/is not a CA/);
  });
});

describe('fast path = generic path', () => {
  const cases: Array<{
    name: string;
    factory: string;
    id: string;
    serial?: Uint8Array;
    now: Date;
    validity?: { years: number } | { days: number } | { seconds: number };
  }> = [
    {
      name: 'typical',
      factory: 'acme',
      id: '0x04005001eee3ba1ee96e60047e57da0f6880',
      now: new Date('2026-05-01T10:20:30.999Z'),
    },
    {
      name: 'serial with top bit (sign octet)',
      factory: 'acme',
      id: '0x04005001eee3ba1ee96e60047e57da0f6880',
      serial: Uint8Array.of(0xff, 1),
      now: new Date('2026-05-01T00:00:00Z'),
    },
    {
      name: 'serial with leading zeros',
      factory: 'x',
      id: '000000000000000000000000000000000000000001',
      serial: Uint8Array.of(0, 0, 0, 5),
      now: new Date('2026-05-01T00:00:00Z'),
    },
    {
      name: 'validity crossing 2050',
      factory: 'long-lived',
      id: '0x04ffffffffffffffffffffffffffffffffff',
      now: new Date('2040-02-29T23:59:59Z'),
      validity: { years: 20 },
    },
    {
      name: 'days, non-ASCII factory',
      factory: 'Fabrik München',
      id: '0x040000000000000000000000000000000001',
      now: new Date('2049-12-31T23:59:59Z'),
      validity: { days: 1 },
    },
    {
      name: 'seconds (a 2-minute certificate)',
      factory: 'short-lived',
      id: '0x040000000000000000000000000000000002',
      now: new Date('2026-12-02T14:00:00.500Z'),
      validity: { seconds: 120 },
    },
    {
      name: 'long factory name (multi-byte lengths)',
      factory: 'f'.repeat(64),
      id: '0x04005001eee3ba1ee96e60047e57da0f6880',
      now: new Date('2026-01-01T00:00:00Z'),
    },
  ];

  for (const c of cases) {
    it(`gives byte-identical certificates: ${c.name}`, async () => {
      const signer = deterministic(caSigner);
      const key = newSigner();
      const id = parseDeviceId(c.id);
      const serial =
        c.serial ?? Uint8Array.of(0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8);
      const profile =
        c.validity === undefined
          ? { issuerCert, factory: c.factory }
          : { issuerCert, factory: c.factory, validity: c.validity };
      const request = { deviceId: id, publicKeySpki: key.publicKeySpki, signer, serial, now: c.now };
      const fast = await deviceCertificate({ template: deviceCertificateTemplate(profile), ...request });
      const generic = await deviceCertificateGeneric({ ...profile, ...request });
      expect(Buffer.from(fast).toString('hex')).toBe(Buffer.from(generic).toString('hex'));
      // And with the real (randomized) signer, the signed parts are identical and both verify.
      const template = deviceCertificateTemplate(profile);
      const tbsFast = deviceTbsCertificate({ template, ...request, signer: caSigner });
      const tbsGeneric = tbsCertificateDer({
        issuer: issuerFromCertificate(issuerCert),
        subject: deviceSubject(c.factory, id),
        subjectPublicKeySpki: key.publicKeySpki,
        serial,
        ...validityFor(c.now, c.validity ?? { years: 20 }),
        extensions: DEVICE_EXTENSIONS,
        signer: caSigner,
      });
      expect(tbsFast).toEqual(tbsGeneric);
      const real = await deviceCertificate({ template, ...request, signer: caSigner });
      expect(openssl(['x509', '-inform', 'DER', '-noout', '-subject'], real)).toContain(`CN = ${id.hex}`);
      expect(verifyCertificateSignature(real, caSigner.publicKeySpki)).toBe(true);
      expect(verifyCertificateSignature(real, rootSigner.publicKeySpki)).toBe(false);
    });
  }

  it('draws a fresh random positive serial (127 random bits in 16 octets) for each certificate', async () => {
    const template = deviceCertificateTemplate({ issuerCert, factory: 'acme' });
    const key = newSigner().publicKeySpki;
    const serials = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const der = await deviceCertificate({ template, signer: caSigner, deviceId, publicKeySpki: key });
      const hex = parseCertificate(der).serialHex;
      // Positive and below 2^127: the top bit is cleared so no sign octet is needed.
      expect(BigInt('0x' + hex)).toBeGreaterThan(0n);
      expect(BigInt('0x' + hex)).toBeLessThan(2n ** 127n);
      serials.add(hex);
    }
    expect(serials.size).toBe(200);
  });

  it('issueDeviceCertificate reports the serial and validity the DER holds (the enrollment parses nothing back)', async () => {
    const template = deviceCertificateTemplate({ issuerCert, factory: 'acme', validity: { days: 90 } });
    for (let i = 0; i < 20; i++) {
      const now = new Date(Date.UTC(2027, 0, 1, 0, 0, i, 500));
      const issued = await issueDeviceCertificate({
        template,
        signer: caSigner,
        deviceId,
        publicKeySpki: newSigner().publicKeySpki,
        now,
      });
      const parsed = parseCertificate(issued.der);
      expect(issued.serialHex).toBe(parsed.serialHex);
      expect(issued.notBefore.toISOString()).toBe(parsed.notBefore.toISOString());
      expect(issued.notAfter.toISOString()).toBe(parsed.notAfter.toISOString());
    }
  });
});

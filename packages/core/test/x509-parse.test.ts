import { afterAll, describe, expect, it } from 'vitest';
import {
  KeyferryError,
  keyAlgorithmOf,
  MAX_CERTIFICATE_BYTES,
  parseCertificate,
  publicKeysEqual,
  verifyCertificateSignature,
} from '../src/index.ts';
import { openssl, pemToDer, scratchDir } from './support/openssl.ts';

const dir = scratchDir();
afterAll(() => dir.cleanup());

// A CA and a leaf made entirely by openssl, so parsing is checked against another implementation.
const caKey = dir.path('ca.key');
openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', caKey]);
const caPem = openssl([
  'req',
  '-new',
  '-x509',
  '-key',
  caKey,
  '-subj',
  '/C=DE/O=Acme, Inc./CN=Test CA',
  '-days',
  '30',
]);
const caFile = dir.write('ca.pem', caPem);
const leafKey = dir.path('leaf.key');
openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', leafKey]);
const leafCsr = dir.write(
  'leaf.csr',
  openssl(['req', '-new', '-key', leafKey, '-subj', '/OU=acme/CN=0123/serialNumber=42']),
);
const ext = dir.write(
  'leaf.ext',
  'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=clientAuth,serverAuth\nsubjectAltName=DNS:a.example,IP:10.0.0.1\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n',
);
const leafPem = openssl([
  'x509',
  '-req',
  '-in',
  leafCsr,
  '-CA',
  caFile,
  '-CAkey',
  caKey,
  '-set_serial',
  '0x00ff0102',
  '-days',
  '10',
  '-extfile',
  ext,
]);
const leafFile = dir.write('leaf.pem', leafPem);
const ca = pemToDer(caPem);
const leaf = pemToDer(leafPem);

describe('parseCertificate against openssl-made certificates', () => {
  it('reads every field openssl reports', () => {
    const c = parseCertificate(leaf);
    expect(c.version).toBe(3);
    expect(c.subject.text).toBe('serialNumber=42,CN=0123,OU=acme');
    expect(c.subject.toString()).toBe(c.subject.text);
    expect(`${c.issuer}`).toBe('CN=Test CA,O=Acme\\, Inc.,C=DE');
    expect(c.subjectAttributes).toEqual({ OU: 'acme', CN: '0123', serialNumber: '42' });
    expect(c.serialHex).toBe('ff0102');
    expect(openssl(['x509', '-in', leafFile, '-noout', '-serial']).trim()).toBe('serial=FF0102');
    const fingerprint = openssl(['x509', '-in', leafFile, '-noout', '-fingerprint', '-sha256']).trim();
    expect(fingerprint.split('=')[1]!.replace(/:/g, '').toLowerCase()).toBe(c.fingerprintSha256);
    const dates = openssl(['x509', '-in', leafFile, '-noout', '-startdate', '-enddate']);
    expect(dates).toContain(`notBefore=${opensslDate(c.notBefore)}`);
    expect(dates).toContain(`notAfter=${opensslDate(c.notAfter)}`);
    expect(c.isCa).toBe(false);
    expect(c.pathLen).toBeUndefined();
    expect(c.keyUsage).toEqual(['digitalSignature', 'keyAgreement']);
    expect(c.extKeyUsage).toEqual(['clientAuth', 'serverAuth']);
    expect(c.dnsNames).toEqual(['a.example']);
    expect(c.ipAddresses).toEqual(['10.0.0.1']);
    const text = openssl(['x509', '-in', leafFile, '-noout', '-text']);
    expect(text.toLowerCase()).toContain(hexColons(c.ski!));
    expect(c.aki).toBe(parseCertificate(ca).ski);
    expect(c.keyAlgorithm).toBe('P-256');
    const pub = pemToDer(openssl(['pkey', '-in', leafKey, '-pubout']));
    expect(c.spki).toEqual(pub);
    expect(c.unknownCriticalExtensions).toEqual([]);
  });

  it('reads the CA and verifies signatures with the right key only', () => {
    const c = parseCertificate(ca);
    expect(c.isCa).toBe(true);
    expect(c.subject.attributes).toEqual({ C: 'DE', O: 'Acme, Inc.', CN: 'Test CA' });
    expect(verifyCertificateSignature(leaf, c.spki)).toBe(true);
    expect(verifyCertificateSignature(ca, c.spki)).toBe(true);
    expect(verifyCertificateSignature(parseCertificate(leaf), parseCertificate(leaf).spki)).toBe(false);
  });

  it('reports unknown critical extensions', () => {
    const extFile = dir.write('crit.ext', 'basicConstraints=CA:FALSE\n1.2.3.4=critical,DER:0500\n');
    const pem = openssl([
      'x509',
      '-req',
      '-in',
      leafCsr,
      '-CA',
      caFile,
      '-CAkey',
      caKey,
      '-days',
      '1',
      '-extfile',
      extFile,
    ]);
    expect(parseCertificate(pemToDer(pem)).unknownCriticalExtensions).toEqual(['1.2.3.4']);
  });
});

describe('parseCertificate refusals', () => {
  function refusal(der: Uint8Array): string {
    try {
      parseCertificate(der);
    } catch (error) {
      expect(error).toBeInstanceOf(KeyferryError);
      expect((error as KeyferryError).code).toBe('certificate_invalid');
      return (error as Error).message;
    }
    throw new Error('expected certificate_invalid');
  }

  it('garbage, truncation, trailing bytes, PEM, oversize', () => {
    expect(refusal(Uint8Array.of(0x04, 0x01, 0x00))).toMatch(
      /^certificate is not valid DER: expected tag 0x30/,
    );
    expect(refusal(leaf.subarray(0, leaf.length - 1))).toMatch(/runs past the end/);
    expect(refusal(Uint8Array.from([...leaf, 0]))).toMatch(/1 trailing bytes/);
    expect(refusal(new TextEncoder().encode(leafPem))).toMatch(/PEM text/);
    expect(refusal(new Uint8Array(MAX_CERTIFICATE_BYTES + 1))).toBe(
      'certificate is 16385 bytes; the limit is 16384',
    );
  });

  it('a CSR is not a certificate', () => {
    expect(refusal(pemToDer(openssl(['req', '-in', leafCsr])))).toMatch(/not an X.509 certificate/);
  });

  it('indefinite lengths (BER, not DER) are refused', () => {
    const ber = Uint8Array.from([0x30, 0x80, ...leaf.subarray(4), 0, 0]);
    expect(refusal(ber)).toMatch(/indefinite length/);
  });
});

describe('public keys', () => {
  it('publicKeysEqual sees one key through compressed and uncompressed encodings', () => {
    const uncompressed = pemToDer(openssl(['pkey', '-in', leafKey, '-pubout']));
    const compressed = pemToDer(openssl(['ec', '-in', leafKey, '-pubout', '-conv_form', 'compressed']));
    expect(compressed.length).toBeLessThan(uncompressed.length);
    expect(publicKeysEqual(uncompressed, compressed)).toBe(true);
    expect(keyAlgorithmOf(compressed)).toBe('P-256');
    const other = pemToDer(openssl(['pkey', '-in', caKey, '-pubout']));
    expect(publicKeysEqual(uncompressed, other)).toBe(false);
    expect(publicKeysEqual(uncompressed, Uint8Array.of(1, 2, 3))).toBe(false);
  });
});

function opensslDate(date: Date): string {
  const month = date.toLocaleString('en-US', { month: 'short', timeZone: 'UTC' });
  const day = String(date.getUTCDate()).padStart(2, ' ');
  const time = date.toISOString().slice(11, 19);
  return `${month} ${day} ${time} ${date.getUTCFullYear()} GMT`;
}

function hexColons(hex: string): string {
  return hex.match(/../g)!.join(':');
}

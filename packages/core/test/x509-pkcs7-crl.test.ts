import { randomBytes } from 'node:crypto';
import {
  CertificateChoices,
  CertificateSet,
  ContentInfo,
  EncapsulatedContentInfo,
  id_data,
  id_signedData,
  SignedData,
} from '@peculiar/asn1-cms';
import { AsnArray, AsnConvert, AsnType, AsnTypeTypes, OctetString } from '@peculiar/asn1-schema';
import { Certificate, CRLReason, CRLReasons, Extension, RevokedCertificate, Time } from '@peculiar/asn1-x509';
import { afterAll, describe, expect, it } from 'vitest';
import {
  buildCrl,
  createCsr,
  decodeCertsOnly,
  encodeCertsOnly,
  factoryRootProfile,
  intermediateCaFromCsr,
  KeyferryError,
  parseCertificate,
  type RevokedEntry,
  revokedCertificatesDer,
  revokedEntriesDer,
  serverCertificate,
  toPem,
} from '../src/index.ts';
import { encodeTlv } from '../src/x509/der.ts';
import { newSigner, openssl, opensslOutput, pemToDer, scratchDir } from './support/openssl.ts';

const dir = scratchDir();
afterAll(() => dir.cleanup());

const rootSigner = newSigner();
const root = await factoryRootProfile({ factory: 'acme', signer: rootSigner });
const caSigner = newSigner();
const ca = await intermediateCaFromCsr({
  csr: await createCsr({ subject: { CN: 'fio-device-gateway-ca' }, signer: caSigner }),
  issuerCert: root,
  signer: rootSigner,
});
const leaf = await serverCertificate({
  issuerCert: ca,
  signer: caSigner,
  publicKeySpki: newSigner().publicKeySpki,
  dnsNames: ['x.example'],
});

describe('PKCS#7 certs-only', () => {
  it('is byte-identical to the @peculiar/asn1-cms encoding of the same message', () => {
    const certificates = new CertificateSet(
      [leaf, ca].map((der) => new CertificateChoices({ certificate: AsnConvert.parse(der, Certificate) })),
    );
    const signedData = new SignedData({
      version: 1,
      encapContentInfo: new EncapsulatedContentInfo({ eContentType: id_data }),
      certificates,
    });
    const reference = AsnConvert.serialize(
      new ContentInfo({ contentType: id_signedData, content: AsnConvert.serialize(signedData) }),
    );
    expect(Buffer.from(encodeCertsOnly([leaf, ca])).toString('hex')).toBe(
      Buffer.from(reference).toString('hex'),
    );
  });

  it('is read by openssl pkcs7 -print_certs, certificates in order', () => {
    const der = encodeCertsOnly([leaf, ca]);
    const out = openssl(['pkcs7', '-inform', 'DER', '-print_certs'], der);
    expect(out.match(/^subject=.*$/gm)).toEqual([
      'subject=CN = x.example',
      'subject=CN = fio-device-gateway-ca',
    ]);
    expect(out.match(/-----BEGIN CERTIFICATE-----/g)).toHaveLength(2);
    // The certificates come back with their exact bytes.
    const certs = out
      .split(/(?=subject=)/)
      .map((block) => pemToDer(block.slice(block.indexOf('-----BEGIN'))));
    expect(certs).toEqual([leaf, ca]);
  });

  it('round-trips through decodeCertsOnly, and decodes what openssl makes', () => {
    expect(decodeCertsOnly(encodeCertsOnly([leaf, ca, root]))).toEqual([leaf, ca, root]);
    expect(decodeCertsOnly(encodeCertsOnly([]))).toEqual([]);
    const bundle = dir.write('bundle.pem', toPem(ca, 'CERTIFICATE') + toPem(leaf, 'CERTIFICATE'));
    const made = pemToDer(openssl(['crl2pkcs7', '-nocrl', '-certfile', bundle]));
    expect(decodeCertsOnly(made)).toEqual([ca, leaf]);
  });

  it('refuses what is not a certs-only message', () => {
    const refuse = (der: Uint8Array) => {
      try {
        decodeCertsOnly(der);
      } catch (error) {
        expect(error).toBeInstanceOf(KeyferryError);
        expect((error as KeyferryError).code).toBe('certificate_invalid');
        return (error as Error).message;
      }
      throw new Error('expected a refusal');
    };
    expect(refuse(leaf)).toMatch(/content type is not id-signedData/);
    expect(refuse(Uint8Array.of(1, 2, 3))).toMatch(/^not a PKCS#7 certs-only message/);
    const good = encodeCertsOnly([leaf]);
    expect(refuse(good.subarray(0, good.length - 1))).toMatch(/runs past the end/);
    expect(() => encodeCertsOnly([Uint8Array.of(5)])).toThrow(TypeError);
  });
});

describe('buildCrl', () => {
  it('makes a v2 CRL that openssl verifies against the issuer, with AKI, number and entries', async () => {
    const leafSerial = parseCertificate(leaf).serialHex;
    const thisUpdate = new Date('2026-06-01T00:00:00Z');
    const crl = await buildCrl({
      issuerCert: ca,
      signer: caSigner,
      revoked: [
        { serialHex: leafSerial, revokedAt: new Date('2026-05-30T10:00:00Z'), reason: 'keyCompromise' },
        { serialHex: '0x01', revokedAt: new Date('2026-05-31T10:00:00Z') },
      ],
      thisUpdate,
      nextUpdate: new Date('2026-06-08T00:00:00Z'),
      crlNumber: 4242,
    });
    const caFile = dir.write('ca.pem', toPem(ca, 'CERTIFICATE'));
    const crlFile = dir.write('crl.der', crl);
    const out = openssl(['crl', '-inform', 'DER', '-in', crlFile, '-CAfile', caFile, '-noout', '-text']);
    expect(out).toContain('Version 2 (0x1)');
    expect(out).toContain('Issuer: CN = fio-device-gateway-ca');
    expect(out).toContain('Last Update: Jun  1 00:00:00 2026 GMT');
    expect(out).toMatch(/CRL Number: \s+4242/);
    expect(out).toContain(parseCertificate(ca).ski!.toUpperCase().match(/../g)!.join(':'));
    expect(out).toContain(`Serial Number: ${leafSerial.toUpperCase()}`);
    expect(out).toContain('Key Compromise');
    expect(out).toContain('Serial Number: 01');
    const verify = opensslOutput([
      'crl',
      '-inform',
      'DER',
      '-in',
      crlFile,
      '-CAfile',
      caFile,
      '-noout',
      '-verify',
    ]);
    expect(verify).toContain('verify OK');
    expect(verify).not.toContain('failure');
    // A CA of the same name with another key: the signature check itself must fail.
    const impostor = await intermediateCaFromCsr({
      csr: await createCsr({ subject: { CN: 'fio-device-gateway-ca' }, signer: newSigner() }),
      issuerCert: root,
      signer: rootSigner,
    });
    const impostorFile = dir.write('impostor.pem', toPem(impostor, 'CERTIFICATE'));
    const refused = opensslOutput([
      'crl',
      '-inform',
      'DER',
      '-in',
      crlFile,
      '-CAfile',
      impostorFile,
      '-noout',
      '-verify',
    ]);
    expect(refused).toContain('verify failure');
    expect(refused).not.toContain('verify OK');
  });

  it('leaves out the revoked list when empty and refuses misuse', async () => {
    const base = {
      issuerCert: ca,
      signer: caSigner,
      thisUpdate: new Date(),
      nextUpdate: new Date(Date.now() + 86400e3),
      crlNumber: 1,
    };
    const crl = await buildCrl({ ...base, revoked: [] });
    const out = openssl(['crl', '-inform', 'DER', '-noout', '-text'], crl);
    expect(out).toContain('No Revoked Certificates.');
    await expect(buildCrl({ ...base, signer: rootSigner, revoked: [] })).rejects.toThrow(
      /not the issuer's key/,
    );
    await expect(buildCrl({ ...base, crlNumber: -1, revoked: [] })).rejects.toThrow(/crlNumber/);
    await expect(
      buildCrl({ ...base, revoked: [{ serialHex: 'xyz', revokedAt: new Date() }] }),
    ).rejects.toThrow(/invalid serial/);
  });

  it('writes the revoked list byte for byte as the ASN.1 library does', () => {
    const reasons = Object.keys(CRLReasons).filter((name) => Number.isNaN(Number(name))) as Array<
      NonNullable<RevokedEntry['reason']>
    >;
    // keyferry's own form (lowercase, whole octets, no leading zero) most of the time, and
    // every other form serialFromHex reads now and then: upper case, 0x, colons, a nibble or
    // octets of leading zeros
    const writtenAs = (hex: string, i: number): string => {
      if (i % 11 === 1) return hex.toUpperCase();
      if (i % 11 === 2) return `0x${hex}`;
      if (i % 11 === 3) return hex.replace(/(..)(?!$)/g, '$1:');
      if (i % 11 === 4) return `0${hex}`;
      if (i % 11 === 5) return `0000${hex}`;
      return hex;
    };
    const magnitudes: Buffer[] = [];
    const entries: RevokedEntry[] = [];
    for (let i = 0; i < 400; i++) {
      // Serials of 1..19 octets (20 with the sign octet), with and without the top bit set;
      // dates either side of 2050 (UTCTime, GeneralizedTime).
      const serial = randomBytes(1 + (i % 19));
      serial[0] = serial[0]! | 1;
      if (i % 3 === 0) serial[0] = serial[0]! | 0x80;
      const revokedAt = new Date(
        Date.UTC(1990 + (i % 90), i % 12, 1 + (i % 28), i % 24, i % 60, (i * 7) % 60, i % 1000),
      );
      const serialHex = writtenAs(serial.toString('hex'), i);
      magnitudes.push(serial);
      entries.push(
        i % 4 === 0
          ? { serialHex, revokedAt }
          : { serialHex, revokedAt, reason: reasons[i % reasons.length]! },
      );
    }
    const library = new RevokedList(
      entries.map((entry, i) => {
        const whole = new Date(Math.floor(entry.revokedAt.getTime() / 1000) * 1000);
        const revoked = new RevokedCertificate({
          userCertificate: unsignedInteger(magnitudes[i]!),
          revocationDate: new Time(
            whole.getUTCFullYear() < 2050 ? { utcTime: whole } : { generalTime: whole },
          ),
        });
        if (entry.reason !== undefined) {
          revoked.crlEntryExtensions = [
            new Extension({
              extnID: '2.5.29.21',
              extnValue: new OctetString(AsnConvert.serialize(new CRLReason(CRLReasons[entry.reason]))),
            }),
          ];
        }
        return revoked;
      }),
    );
    expect(Buffer.from(revokedCertificatesDer(entries))).toEqual(Buffer.from(AsnConvert.serialize(library)));
    expect(() =>
      revokedCertificatesDer([{ serialHex: '01', revokedAt: new Date(), reason: 'sleepy' as never }]),
    ).toThrow(/unknown revocation reason "sleepy"/);
  });

  it('takes serials up to the 20 octets RFC 5280 allows, the sign octet counted, in any form', () => {
    const at = new Date(Date.UTC(2026, 0, 1));
    const listed = (serialHex: string) => revokedCertificatesDer([{ serialHex, revokedAt: at }]);
    // SEQUENCE { SEQUENCE { INTEGER … } }: the INTEGER's length and first octet
    const integer = (der: Uint8Array) => ({ length: der[5], first: der[6] });
    expect(integer(listed('7f'.repeat(20)))).toEqual({ length: 20, first: 0x7f });
    expect(integer(listed('80'.repeat(19)))).toEqual({ length: 20, first: 0 });
    expect(integer(listed(`0x${'80'.repeat(19)}`))).toEqual({ length: 20, first: 0 });
    expect(() => listed('80'.repeat(20))).toThrow(/at most 20 octets, got 21/);
    expect(() => listed('7f'.repeat(21))).toThrow(/at most 20 octets, got 21/);
    expect(() => listed('00')).toThrow(/must be positive/);
    expect(() => listed('')).toThrow(/invalid serial ""/);
    expect(() => listed('12g4')).toThrow(/invalid serial "12g4"/);
  });

  it('makes a 20,000-entry CRL, encoded in slices, that openssl verifies and lists whole', async () => {
    const revoked = Array.from({ length: 20_000 }, (_, i) => ({
      serialHex: (0x100000 + i).toString(16),
      revokedAt: new Date(Date.UTC(2026, 0, 1) + i * 1000),
      reason: 'superseded' as const,
    }));
    // slices of uneven sizes, one empty: their encodings one after the other are the whole list's
    const cuts = [0, 1, 1, 4_999, 12_345, 20_000];
    const encodedEntries = cuts.slice(1).map((end, i) => revokedEntriesDer(revoked.slice(cuts[i], end)));
    expect(Buffer.from(encodeTlv(0x30, ...encodedEntries))).toEqual(
      Buffer.from(revokedCertificatesDer(revoked)),
    );
    const crl = await buildCrl({
      issuerCert: ca,
      signer: caSigner,
      revoked: { encodedEntries },
      thisUpdate: new Date('2026-06-01T00:00:00Z'),
      nextUpdate: new Date('2026-06-08T00:00:00Z'),
      crlNumber: 7,
    });
    const caFile = dir.write('ca-big.pem', toPem(ca, 'CERTIFICATE'));
    const crlFile = dir.write('crl-big.der', crl);
    const verify = opensslOutput([
      'crl',
      '-inform',
      'DER',
      '-in',
      crlFile,
      '-CAfile',
      caFile,
      '-noout',
      '-verify',
    ]);
    expect(verify).toContain('verify OK');
    const text = openssl(['crl', '-inform', 'DER', '-in', crlFile, '-noout', '-text']);
    expect(text.match(/Serial Number: /g)).toHaveLength(20_000);
    expect(text.match(/Superseded/g)).toHaveLength(20_000);
    expect(text).toContain('Serial Number: 104E1F');
    expect(text).toContain('Revocation Date: Jan  1 05:33:19 2026 GMT');
  });
});

/** `SEQUENCE OF RevokedCertificate`, as the library would declare it. */
class RevokedList extends AsnArray<RevokedCertificate> {}
AsnType({ type: AsnTypeTypes.Sequence, itemType: RevokedCertificate })(RevokedList);

/** The content of a non-negative INTEGER: leading zeros dropped, a 0x00 before a set top bit. */
function unsignedInteger(magnitude: Buffer): ArrayBuffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const trimmed = magnitude.subarray(start);
  const content = trimmed[0]! & 0x80 ? Buffer.concat([Buffer.of(0), trimmed]) : trimmed;
  return Uint8Array.from(content).buffer;
}

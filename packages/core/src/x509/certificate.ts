import { createHash } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import { KeyferryError } from '../errors.ts';
import { childrenOf, DerError, readWhole, TAG, type Tlv, tlvBytes, u8, valueBytes } from './der.ts';
import { type ExtensionSummary, summarizeExtensions } from './extensions.ts';
import { type DistinguishedName, type DnAttributeName, describeName } from './name.ts';
import { type KeyAlgorithm, keyAlgorithmOf } from './public-key.ts';
import { serialToHex } from './serial.ts';
import { verifySignature } from './signature.ts';

/**
 * The largest certificate keyferry reads. Real ones are 0.5–2 KiB; the limit bounds what an
 * unauthenticated peer (an EST client, an uploaded root) can make the parser chew on.
 */
export const MAX_CERTIFICATE_BYTES = 16_384;

/** A decoded X.509 v3 certificate with the exact bytes of every part a check needs. */
export interface ParsedCertificate extends Omit<ExtensionSummary, 'unknownCritical'> {
  readonly der: Uint8Array;
  readonly version: number;
  readonly subject: DistinguishedName;
  readonly issuer: DistinguishedName;
  /** Lowercase hex of the serial's value, without a sign octet. */
  readonly serialHex: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** DER SubjectPublicKeyInfo. */
  readonly spki: Uint8Array;
  readonly keyAlgorithm: KeyAlgorithm;
  /** The subject's first CN, OU, serialNumber… (profile fields). */
  readonly subjectAttributes: Readonly<Partial<Record<DnAttributeName, string>>>;
  /** Lowercase hex SHA-256 of the DER, as `openssl x509 -fingerprint -sha256` shows it without colons. */
  readonly fingerprintSha256: string;
  readonly signatureAlgorithm: string;
  /** The exact TBSCertificate bytes the signature covers. */
  readonly signedBytes: Uint8Array;
  readonly signature: Uint8Array;
  /** Critical extensions keyferry does not understand; a chain with any is refused. */
  readonly unknownCriticalExtensions: readonly string[];
}

/**
 * Decodes a DER certificate. Throws `certificate_invalid` saying what is wrong (too large,
 * not DER, not a certificate, mismatched signature algorithms, malformed extension).
 */
export function parseCertificate(der: Uint8Array): ParsedCertificate {
  if (!(der instanceof Uint8Array))
    throw new TypeError('parseCertificate takes the DER bytes of a certificate');
  if (der.length > MAX_CERTIFICATE_BYTES) {
    throw refuse(`certificate is ${der.length} bytes; the limit is ${MAX_CERTIFICATE_BYTES}`);
  }
  if (der[0] === 0x2d) throw refuse('certificate is PEM text, not DER; use fromPem first');
  let parts: ReturnType<typeof splitCertificate>;
  try {
    parts = splitCertificate(der);
  } catch (error) {
    if (error instanceof DerError) throw refuse(`certificate is not valid DER: ${error.message}`);
    throw error;
  }
  let cert: Certificate;
  try {
    cert = AsnConvert.parse(der, Certificate);
  } catch (error) {
    throw refuse(`not an X.509 certificate: ${(error as Error).message}`);
  }
  const tbs = cert.tbsCertificate;
  if (tbs.signature.algorithm !== cert.signatureAlgorithm.algorithm) {
    throw refuse('certificate signature algorithm differs inside and outside the signed part');
  }
  let summary: ExtensionSummary;
  let keyAlgorithm: KeyAlgorithm;
  try {
    summary = summarizeExtensions(tbs.extensions ?? []);
    keyAlgorithm = keyAlgorithmOf(parts.spki);
  } catch (error) {
    throw refuse(`certificate content is malformed: ${(error as Error).message}`);
  }
  const subject = describeName(tbs.subject, parts.subject);
  const { unknownCritical, ...extensions } = summary;
  return {
    der,
    version: tbs.version + 1,
    subject,
    issuer: describeName(tbs.issuer, parts.issuer),
    serialHex: serialToHex(u8(tbs.serialNumber)),
    notBefore: tbs.validity.notBefore.getTime(),
    notAfter: tbs.validity.notAfter.getTime(),
    spki: parts.spki,
    keyAlgorithm,
    ...extensions,
    subjectAttributes: subject.attributes,
    fingerprintSha256: createHash('sha256').update(der).digest('hex'),
    signatureAlgorithm: cert.signatureAlgorithm.algorithm,
    signedBytes: parts.tbs,
    signature: parts.signature,
    unknownCriticalExtensions: unknownCritical,
  };
}

/**
 * True when `cert` was signed by the key in `issuerSpki`. Accepts the DER or a parsed
 * certificate; a certificate that does not parse gives `certificate_invalid`.
 */
export function verifyCertificateSignature(
  cert: ParsedCertificate | Uint8Array,
  issuerSpki: Uint8Array,
): boolean {
  const parsed = cert instanceof Uint8Array ? parseCertificate(cert) : cert;
  return verifySignature(parsed.signatureAlgorithm, issuerSpki, parsed.signedBytes, parsed.signature);
}

function splitCertificate(der: Uint8Array) {
  const outer = readWhole(der, TAG.SEQUENCE);
  const [tbs, algorithm, signature, extra] = childrenOf(der, outer);
  if (
    tbs?.tag !== TAG.SEQUENCE ||
    algorithm?.tag !== TAG.SEQUENCE ||
    signature?.tag !== TAG.BIT_STRING ||
    extra
  ) {
    throw refuse('not an X.509 certificate: not SEQUENCE { tbsCertificate, algorithm, signature }');
  }
  const fields = childrenOf(der, tbs);
  // version is [0] EXPLICIT and optional: skip it when present.
  const at = fields[0]?.tag === 0xa0 ? 1 : 0;
  const pick = (i: number): Tlv => {
    const field = fields[at + i];
    if (field?.tag !== TAG.SEQUENCE)
      throw refuse('not an X.509 certificate: tbsCertificate is missing a field');
    return field;
  };
  const bits = valueBytes(der, signature);
  if (bits[0] !== 0) throw refuse('certificate signature bit string has unused bits');
  return {
    tbs: tlvBytes(der, tbs),
    issuer: tlvBytes(der, pick(2)),
    subject: tlvBytes(der, pick(4)),
    spki: tlvBytes(der, pick(5)),
    signature: bits.subarray(1),
  };
}

function refuse(message: string): KeyferryError {
  return new KeyferryError('certificate_invalid', message);
}

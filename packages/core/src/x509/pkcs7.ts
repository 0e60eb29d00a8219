import { KeyferryError } from '../errors.ts';
import { MAX_CERTIFICATE_BYTES } from './certificate.ts';
import {
  bytesEqual,
  childrenOf,
  DerError,
  encodeTlv,
  readTlv,
  readWhole,
  TAG,
  type Tlv,
  tlvBytes,
} from './der.ts';

/** Most certificates accepted in one certs-only message (an EST answer holds one to three). */
export const MAX_CERTS_ONLY_CERTIFICATES = 16;

// DER of the OIDs id-signedData and id-data (RFC 5652 §5.1, §4).
const SIGNED_DATA_OID = Uint8Array.from([0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02]);
const DATA_OID = Uint8Array.from([0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01]);
const VERSION_1 = Uint8Array.of(TAG.INTEGER, 1, 1);
const EMPTY_SET = Uint8Array.of(TAG.SET, 0);
const CONTEXT_0 = 0xa0;

/**
 * A degenerate certs-only SignedData (RFC 7030 §4.1.3, RFC 5652): version 1, no digest
 * algorithms, id-data content absent, the certificates in the order given, no signers.
 * Written by splicing the certificates' exact bytes (it runs once per enrollment, where
 * re-encoding each certificate through the ASN.1 library would cost more than signing it);
 * a test checks the result is byte-identical to the @peculiar/asn1-cms encoding.
 */
export function encodeCertsOnly(certs: readonly Uint8Array[]): Uint8Array {
  if (certs.length > MAX_CERTS_ONLY_CERTIFICATES) {
    throw new TypeError(`at most ${MAX_CERTS_ONLY_CERTIFICATES} certificates fit a certs-only message`);
  }
  for (const cert of certs) {
    try {
      readWhole(cert, TAG.SEQUENCE);
    } catch (error) {
      if (error instanceof DerError) throw new TypeError(`not a DER certificate: ${error.message}`);
      throw error;
    }
  }
  const signedData = encodeTlv(
    TAG.SEQUENCE,
    VERSION_1,
    EMPTY_SET,
    encodeTlv(TAG.SEQUENCE, DATA_OID),
    encodeTlv(CONTEXT_0, ...certs),
    EMPTY_SET,
  );
  return encodeTlv(TAG.SEQUENCE, SIGNED_DATA_OID, encodeTlv(CONTEXT_0, signedData));
}

/**
 * The certificates (exact DER) of a PKCS#7/CMS SignedData, as an EST server's cacerts or
 * simpleenroll answer carries them. Throws `certificate_invalid` for anything else.
 */
export function decodeCertsOnly(der: Uint8Array): Uint8Array[] {
  try {
    return splitSignedData(der);
  } catch (error) {
    if (error instanceof DerError)
      throw new KeyferryError('certificate_invalid', `not a PKCS#7 certs-only message: ${error.message}`);
    throw error;
  }
}

function splitSignedData(der: Uint8Array): Uint8Array[] {
  const info = readWhole(der, TAG.SEQUENCE);
  const [contentType, explicit, extra] = childrenOf(der, info);
  if (contentType === undefined || !bytesEqual(tlvBytes(der, contentType), SIGNED_DATA_OID)) {
    throw new DerError('content type is not id-signedData');
  }
  if (explicit?.tag !== CONTEXT_0 || extra !== undefined) throw new DerError('content is missing');
  const signedData = readTlv(der, explicit.valueStart, explicit.end);
  if (signedData.tag !== TAG.SEQUENCE || signedData.end !== explicit.end)
    throw new DerError('SignedData is not a SEQUENCE');
  const fields = childrenOf(der, signedData);
  const [version, digests, encap] = fields;
  if (version?.tag !== TAG.INTEGER || digests?.tag !== TAG.SET || encap?.tag !== TAG.SEQUENCE) {
    throw new DerError('SignedData lacks version, digestAlgorithms or encapContentInfo');
  }
  const certificates: Tlv | undefined = fields[3]?.tag === CONTEXT_0 ? fields[3] : undefined;
  if (certificates === undefined) return [];
  const out: Uint8Array[] = [];
  for (const cert of childrenOf(der, certificates)) {
    // Attribute certificates and other formats ([1], [2], [3]) are not X.509 certificates.
    if (cert.tag !== TAG.SEQUENCE) continue;
    if (cert.end - cert.start > MAX_CERTIFICATE_BYTES)
      throw new DerError('a certificate is larger than the limit');
    if (out.length === MAX_CERTS_ONLY_CERTIFICATES) {
      throw new DerError(`more than ${MAX_CERTS_ONLY_CERTIFICATES} certificates`);
    }
    out.push(tlvBytes(der, cert).slice());
  }
  return out;
}

/**
 * The device-link's hot path for the common identity shape, a leaf issued directly by a trust
 * anchor (an SE05x identity under its vendor CA): checked with OpenSSL through node:crypto's
 * X509Certificate (`checkIssued`, `verify(publicKey)`) instead of the ASN.1 library, which cost
 * ~10x the signature check. The anchor is judged once with the full parser ({@link nativeAnchor})
 * and its key imported once. Whatever this path does not decide — intermediates, a leaf that
 * fails here, extensions it does not read — goes to {@link verifyChain}, so accepting and
 * refusing stay that function's answers (test/native-chain.test.ts compares the two).
 */
import { type KeyObject, X509Certificate } from 'node:crypto';
import { parseCertificate } from './certificate.ts';
import { oidText } from './csr-der.ts';
import { childrenOf, DerError, readTlv } from './der.ts';
import { EXT_KEY_USAGE_OIDS, type ExtKeyUsageName, OID } from './oids.ts';
import { isP256Spki } from './public-key.ts';

/** A trust anchor for {@link verifyIssuedByAnchor}, made once per anchor. */
export interface NativeAnchor {
  readonly x509: X509Certificate;
  readonly publicKey: KeyObject;
}

/** The extensions {@link verifyChain} understands; a leaf with another critical one goes there. */
const KNOWN_EXTENSIONS = new Set<string>([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectAltName,
  OID.subjectKeyIdentifier,
  OID.authorityKeyIdentifier,
]);

/**
 * The anchor ready for the native path, or undefined when the full parser says it may not issue
 * certificates at all (not a CA, no keyCertSign, unknown critical extension): such an anchor is
 * left to {@link verifyChain}, which names the reason.
 */
export function nativeAnchor(der: Uint8Array): NativeAnchor | undefined {
  try {
    const parsed = parseCertificate(der);
    if (!parsed.isCa || parsed.unknownCriticalExtensions.length > 0) return undefined;
    if (parsed.keyUsage.length > 0 && !parsed.keyUsage.includes('keyCertSign')) return undefined;
    const x509 = new X509Certificate(der);
    return { x509, publicKey: x509.publicKey };
  } catch {
    return undefined;
  }
}

/**
 * True when `leaf` is valid at `now`, usable for `purpose` and issued and signed by one of
 * `anchors`; false when this path cannot say yes (the caller then asks {@link verifyChain}).
 */
export function verifyIssuedByAnchor(
  leaf: X509Certificate,
  leafDer: Uint8Array,
  anchors: readonly NativeAnchor[],
  now: Date,
  purpose: ExtKeyUsageName,
): boolean {
  const t = now.getTime();
  if (t < Date.parse(leaf.validFrom) || t > Date.parse(leaf.validTo)) return false;
  // node:crypto names the extended key usages `keyUsage`: undefined when the extension is absent
  const eku = leaf.keyUsage;
  if (
    eku !== undefined &&
    !eku.includes(EXT_KEY_USAGE_OIDS[purpose]) &&
    !eku.includes(EXT_KEY_USAGE_OIDS.anyExtendedKeyUsage)
  )
    return false;
  if (!onlyKnownCriticalExtensions(leafDer)) return false;
  return anchors.some((anchor) => leaf.checkIssued(anchor.x509) && leaf.verify(anchor.publicKey));
}

/** Reads the leaf's extensions directly: each once, every critical one known. */
function onlyKnownCriticalExtensions(der: Uint8Array): boolean {
  try {
    const certificate = readTlv(der, 0);
    const [tbs] = childrenOf(der, certificate);
    if (!tbs) return false;
    const explicit = childrenOf(der, tbs).find((f) => f.tag === 0xa3);
    if (!explicit) return true;
    const [list] = childrenOf(der, explicit);
    if (!list) return false;
    const seen = new Set<string>();
    for (const extension of childrenOf(der, list)) {
      const [oid, second] = childrenOf(der, extension);
      if (oid?.tag !== 0x06 || !second) return false;
      const id = oidText(der, oid);
      if (seen.has(id)) return false;
      seen.add(id);
      const critical = second.tag === 0x01 && der[second.valueStart] === 0xff;
      if (critical && !KNOWN_EXTENSIONS.has(id)) return false;
    }
    return true;
  } catch (error) {
    if (error instanceof DerError) return false;
    throw error;
  }
}

/**
 * The leaf's SubjectPublicKeyInfo when it is a canonical P-256 key (the SE05x identity's), read
 * from the DER without decoding the key: OpenSSL 3's encoder made `x509.publicKey.export()`
 * cost ~0.2 ms. Undefined for any other key or shape; the caller then exports the key.
 */
export function canonicalP256Spki(der: Uint8Array): Uint8Array | undefined {
  try {
    const [tbs] = childrenOf(der, readTlv(der, 0));
    if (!tbs) return undefined;
    const fields = childrenOf(der, tbs);
    // version [0] is optional; then serial, signature, issuer, validity, subject, spki
    const spki = fields[fields[0]?.tag === 0xa0 ? 6 : 5];
    if (spki?.tag !== 0x30) return undefined;
    const bytes = der.subarray(spki.start, spki.end);
    return isP256Spki(bytes) ? Uint8Array.from(bytes) : undefined;
  } catch (error) {
    if (error instanceof DerError) return undefined;
    throw error;
  }
}

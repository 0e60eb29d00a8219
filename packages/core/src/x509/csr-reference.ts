/**
 * The PKCS#10 reader keyferry used before the direct DER reader of csr-der.ts: every field
 * through the ASN.1 library's schema. Kept only as the reference the tests compare the fast
 * reader against; nothing on a request path calls it.
 */
import { CertificationRequest } from '@peculiar/asn1-csr';
import { Extensions } from '@peculiar/asn1-x509';
import type { ParsedCsr } from './csr.ts';
import { parseExactDer } from './csr-der.ts';
import { childrenOf, encodeTlv, readWhole, TAG, tlvBytes, u8, valueBytes } from './der.ts';
import { summarizeExtensions } from './extensions.ts';
import { describeName } from './name.ts';
import { OID } from './oids.ts';
import { keyAlgorithmOf } from './public-key.ts';

/** Decodes a DER request with the ASN.1 library; throws plain errors (no refusal wording). */
export function parseCsrReference(der: Uint8Array): ParsedCsr {
  const outer = readWhole(der, TAG.SEQUENCE);
  const [infoTlv, algorithmTlv, signatureTlv, extra] = childrenOf(der, outer);
  const infoParts =
    infoTlv?.tag === TAG.SEQUENCE ? childrenOf(der, infoTlv).map((t) => tlvBytes(der, t)) : [];
  const [, subjectTlv, spkiTlv] = childrenOf(der, infoTlv!);
  // RFC 2986 requires the [0] attributes, but keyferry reads a request without them (as the
  // library does); the library re-encodes it with an empty [0], so that is what is compared.
  const withAttributes =
    infoParts.length === 3 && algorithmTlv !== undefined && signatureTlv !== undefined && !extra
      ? encodeTlv(
          TAG.SEQUENCE,
          encodeTlv(TAG.SEQUENCE, ...infoParts, Uint8Array.of(0xa0, 0)),
          tlvBytes(der, algorithmTlv),
          tlvBytes(der, signatureTlv),
        )
      : der;
  const request = parseExactDer(withAttributes, CertificationRequest, 'the request');
  const info = request.certificationRequestInfo;
  if (info.version !== 0) throw new Error(`version ${info.version}`);
  const spki = tlvBytes(der, spkiTlv!);
  const dnsNames: string[] = [];
  for (const attribute of info.attributes) {
    if (attribute.type !== OID.extensionRequest) continue;
    for (const value of attribute.values) {
      dnsNames.push(
        ...summarizeExtensions(parseExactDer(u8(value), Extensions, 'extensionRequest')).dnsNames,
      );
    }
  }
  return {
    der,
    subject: describeName(info.subject, tlvBytes(der, subjectTlv!)),
    publicKeySpki: spki,
    keyAlgorithm: keyAlgorithmOf(spki),
    dnsNames,
    signatureAlgorithm: request.signatureAlgorithm.algorithm,
    signedBytes: tlvBytes(der, infoTlv!),
    signature: valueBytes(der, signatureTlv!).subarray(1),
  };
}

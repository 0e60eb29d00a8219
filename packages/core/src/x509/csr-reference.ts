/**
 * The PKCS#10 reader keyferry used before the direct DER reader of csr-der.ts: every field
 * through the ASN.1 library's schema. Kept only as the reference the tests compare the fast
 * reader against; nothing on a request path calls it.
 */
import { CertificationRequest } from '@peculiar/asn1-csr';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Extensions } from '@peculiar/asn1-x509';
import type { ParsedCsr } from './csr.ts';
import { childrenOf, readWhole, TAG, tlvBytes, valueBytes } from './der.ts';
import { summarizeExtensions } from './extensions.ts';
import { describeName } from './name.ts';
import { OID } from './oids.ts';
import { keyAlgorithmOf } from './public-key.ts';

/** Decodes a DER request with the ASN.1 library; throws plain errors (no refusal wording). */
export function parseCsrReference(der: Uint8Array): ParsedCsr {
  const request = AsnConvert.parse(der, CertificationRequest);
  const info = request.certificationRequestInfo;
  if (info.version !== 0) throw new Error(`version ${info.version}`);
  const outer = readWhole(der, TAG.SEQUENCE);
  const [infoTlv, , signatureTlv] = childrenOf(der, outer);
  const [, subjectTlv, spkiTlv] = childrenOf(der, infoTlv!);
  const spki = tlvBytes(der, spkiTlv!);
  const dnsNames: string[] = [];
  for (const attribute of info.attributes) {
    if (attribute.type !== OID.extensionRequest) continue;
    for (const value of attribute.values)
      dnsNames.push(...summarizeExtensions(AsnConvert.parse(value, Extensions)).dnsNames);
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

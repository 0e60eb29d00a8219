import { AsnConvert } from '@peculiar/asn1-schema';
import { CertificateList, CRLReason } from '@peculiar/asn1-x509';
import { KeyferryError } from '../errors.ts';
import { childrenOf, readWhole, TAG, tlvBytes, u8 } from './der.ts';
import { type DistinguishedName, parseName } from './name.ts';
import { OID } from './oids.ts';
import { serialToHex } from './serial.ts';
import { verifySignature } from './signature.ts';

/** A CRL is a few entries here (device CAs), never a vendor's full list. */
export const MAX_CRL_BYTES = 64 * 1024;

/** One entry of a parsed CRL; `reasonCode` is RFC 5280 §5.3.1's number, when present. */
export interface ParsedCrlEntry {
  readonly serialHex: string;
  readonly revokedAt: Date;
  readonly reasonCode?: number;
}

/** A decoded CRL, its signature not yet checked (see {@link verifyCrlSignature}). */
export interface ParsedCrl {
  readonly issuer: DistinguishedName;
  readonly thisUpdate: Date;
  readonly nextUpdate?: Date;
  readonly entries: readonly ParsedCrlEntry[];
  readonly signatureAlgorithm: string;
  readonly signedBytes: Uint8Array;
  readonly signature: Uint8Array;
}

/**
 * Decodes a DER CRL (RFC 5280 §5). Throws `certificate_invalid` saying what is wrong; an
 * entry with a critical extension keyferry does not know is refused.
 */
export function parseCrl(der: Uint8Array): ParsedCrl {
  if (der.length > MAX_CRL_BYTES) {
    throw new KeyferryError('certificate_invalid', `CRL is ${der.length} bytes, more than ${MAX_CRL_BYTES}`);
  }
  let list: CertificateList;
  let signedBytes: Uint8Array;
  try {
    const outer = readWhole(der, TAG.SEQUENCE);
    const [tbs] = childrenOf(der, outer);
    if (tbs?.tag !== TAG.SEQUENCE) throw new Error('no TBSCertList');
    signedBytes = tlvBytes(der, tbs);
    list = AsnConvert.parse(der, CertificateList);
  } catch (err) {
    throw new KeyferryError('certificate_invalid', `not a DER CRL: ${(err as Error).message}`);
  }
  const tbs = list.tbsCertList;
  const entries = (tbs.revokedCertificates ?? []).map((entry) => {
    let reasonCode: number | undefined;
    for (const ext of entry.crlEntryExtensions ?? []) {
      if (ext.extnID === OID.crlReason) {
        reasonCode = AsnConvert.parse(ext.extnValue.buffer, CRLReason).reason;
      } else if (ext.critical) {
        throw new KeyferryError(
          'certificate_invalid',
          `CRL entry has an unknown critical extension ${ext.extnID}`,
        );
      }
    }
    return {
      serialHex: serialToHex(u8(entry.userCertificate)),
      revokedAt: entry.revocationDate.getTime(),
      ...(reasonCode === undefined ? {} : { reasonCode }),
    };
  });
  const sig = u8(list.signature);
  return {
    issuer: parseName(u8(AsnConvert.serialize(tbs.issuer))),
    thisUpdate: tbs.thisUpdate.getTime(),
    ...(tbs.nextUpdate ? { nextUpdate: tbs.nextUpdate.getTime() } : {}),
    entries,
    signatureAlgorithm: list.signatureAlgorithm.algorithm,
    signedBytes,
    signature: sig,
  };
}

/** True when `crl` was signed by the key in `issuerSpki`. */
export function verifyCrlSignature(crl: ParsedCrl, issuerSpki: Uint8Array): boolean {
  return verifySignature(crl.signatureAlgorithm, issuerSpki, crl.signedBytes, crl.signature);
}

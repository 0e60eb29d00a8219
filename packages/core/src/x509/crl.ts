import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  AuthorityKeyIdentifier,
  CRLNumber,
  CRLReason,
  CRLReasons,
  Extension,
  KeyIdentifier,
  TBSCertList,
  Version,
} from '@peculiar/asn1-x509';
import { childrenOf, encodeTlv, readWhole, TAG, tlvBytes, u8 } from './der.ts';
import { DerWriter, timeSize, tlvSize } from './der-writer.ts';
import { issuerFromCertificate } from './issue.ts';
import { nameFromDer } from './name.ts';
import { OID } from './oids.ts';
import { keyIdentifier, publicKeysEqual } from './public-key.ts';
import { serialContent, serialFromHex } from './serial.ts';
import { ECDSA_WITH_SHA256, signedStructure } from './signature.ts';
import type { Signer } from './signer.ts';
import { certificateTime } from './validity.ts';

/** A revocation reason (RFC 5280 §5.3.1). */
export type RevocationReason = keyof typeof CRLReasons;

/** One revoked certificate. */
export interface RevokedEntry {
  readonly serialHex: string;
  readonly revokedAt: Date;
  readonly reason?: RevocationReason;
}

/** Options of {@link buildCrl}. */
export interface BuildCrlOptions {
  readonly issuerCert: Uint8Array;
  readonly signer: Signer;
  readonly revoked: readonly RevokedEntry[];
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
  /** Monotonic CRL number (RFC 5280 §5.2.3); a non-negative safe integer. */
  readonly crlNumber: number;
}

/** A v2 CRL (DER) signed with ecdsa-with-SHA256, with AKI and CRL number extensions. */
export async function buildCrl(options: BuildCrlOptions): Promise<Uint8Array> {
  const issuer = issuerFromCertificate(options.issuerCert);
  if (!publicKeysEqual(options.signer.publicKeySpki, issuer.publicKeySpki)) {
    throw new TypeError("the signer's key is not the issuer's key");
  }
  if (!Number.isSafeInteger(options.crlNumber) || options.crlNumber < 0) {
    throw new TypeError('crlNumber must be a non-negative safe integer');
  }
  if (!(options.nextUpdate.getTime() > options.thisUpdate.getTime())) {
    throw new TypeError('nextUpdate must be after thisUpdate');
  }
  const keyId = issuer.keyIdentifier ?? keyIdentifier(issuer.publicKeySpki);
  const tbs = new TBSCertList({
    version: Version.v2,
    signature: ECDSA_WITH_SHA256,
    issuer: nameFromDer(issuer.name),
    thisUpdate: certificateTime(options.thisUpdate),
    nextUpdate: certificateTime(options.nextUpdate),
    crlExtensions: [
      extension(
        OID.authorityKeyIdentifier,
        new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(keyId) }),
      ),
      extension(OID.crlNumber, new CRLNumber(options.crlNumber)),
    ],
  });
  const tbsDer = withRevokedList(u8(AsnConvert.serialize(tbs)), options.revoked);
  return signedStructure(tbsDer, await options.signer.sign(tbsDer));
}

/**
 * The TBSCertList with its revoked list put in place: before the CRL's extensions, its last
 * field (RFC 5280 §5.1). RFC 5280 §5.1.2.6: with no revoked certificate the list is absent,
 * not empty.
 */
function withRevokedList(tbsDer: Uint8Array, revoked: readonly RevokedEntry[]): Uint8Array {
  if (revoked.length === 0) return tbsDer;
  const fields = childrenOf(tbsDer, readWhole(tbsDer, TAG.SEQUENCE));
  const parts = fields.map((field) => tlvBytes(tbsDer, field));
  parts.splice(parts.length - 1, 0, revokedCertificatesDer(revoked));
  return encodeTlv(TAG.SEQUENCE, ...parts);
}

/** The crlEntryExtensions of each reason: `SEQUENCE { Extension reasonCode }`, encoded once. */
const REASON_EXTENSIONS = new Map<string, Uint8Array>();
for (const [name, code] of Object.entries(CRLReasons)) {
  if (typeof code !== 'number') continue;
  const reasonCode = u8(AsnConvert.serialize(extension(OID.crlReason, new CRLReason(code))));
  REASON_EXTENSIONS.set(name, encodeTlv(TAG.SEQUENCE, reasonCode));
}

/**
 * The revokedCertificates SEQUENCE (RFC 5280 §5.1.2.6), written by hand: a CA's CRL lists every
 * certificate it revoked, tens of thousands in a fleet that renews, and the ASN.1 library
 * spent ~50 µs an entry building and serialising its objects (a 60,000-entry CRL took ~3 s to
 * sign; docs/performance.md). Each entry is `SEQUENCE { serial INTEGER, revocationDate Time,
 * crlEntryExtensions (the reason) OPTIONAL }`, byte for byte what the library writes.
 */
export function revokedCertificatesDer(revoked: readonly RevokedEntry[]): Uint8Array {
  const serials = revoked.map((entry) => serialContent(serialFromHex(entry.serialHex)));
  const dates = revoked.map((entry) => entry.revokedAt);
  const reasons = revoked.map((entry) => {
    if (entry.reason === undefined) return undefined;
    const extensions = REASON_EXTENSIONS.get(entry.reason);
    if (!extensions) throw new TypeError(`unknown revocation reason ${JSON.stringify(entry.reason)}`);
    return extensions;
  });
  const contentLengths = revoked.map(
    (_, i) => tlvSize(serials[i]!.length) + timeSize(dates[i]!) + (reasons[i]?.length ?? 0),
  );
  let listLength = 0;
  for (const length of contentLengths) listLength += tlvSize(length);
  const writer = new DerWriter(tlvSize(listLength)).header(TAG.SEQUENCE, listLength);
  for (let i = 0; i < revoked.length; i++) {
    writer.header(TAG.SEQUENCE, contentLengths[i]!);
    writer.header(TAG.INTEGER, serials[i]!.length).raw(serials[i]!);
    writer.time(dates[i]!);
    const reason = reasons[i];
    if (reason) writer.raw(reason);
  }
  return writer.finish();
}

function extension(oid: string, value: unknown): Extension {
  return new Extension({ extnID: oid, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

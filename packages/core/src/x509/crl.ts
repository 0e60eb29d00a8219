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
import { MAX_SERIAL_OCTETS, serialContent, serialFromHex } from './serial.ts';
import { ECDSA_WITH_SHA256, signedStructure } from './signature.ts';
import type { Signer } from './signer.ts';
import { certificateTime } from './validity.ts';

/** A revocation reason (RFC 5280 §5.3.1). */
export type RevocationReason = keyof typeof CRLReasons;

/** One revoked certificate. */
export interface RevokedEntry {
  readonly serialHex: string;
  readonly revokedAt: Date;
  /** None (or undefined): the entry has no reason code. */
  readonly reason?: RevocationReason | undefined;
}

/**
 * Revoked entries encoded ahead by {@link revokedEntriesDer}, in parts made of consecutive
 * slices of the list: a caller with tens of thousands of entries encodes a slice at a time and
 * lets other work run in between.
 */
export interface EncodedRevokedEntries {
  readonly encodedEntries: readonly Uint8Array[];
}

/** Options of {@link buildCrl}. */
export interface BuildCrlOptions {
  readonly issuerCert: Uint8Array;
  readonly signer: Signer;
  readonly revoked: readonly RevokedEntry[] | EncodedRevokedEntries;
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
function withRevokedList(tbsDer: Uint8Array, revoked: BuildCrlOptions['revoked']): Uint8Array {
  const entries = 'encodedEntries' in revoked ? revoked.encodedEntries : [revokedEntriesDer(revoked)];
  if (entries.every((part) => part.length === 0)) return tbsDer;
  const fields = childrenOf(tbsDer, readWhole(tbsDer, TAG.SEQUENCE));
  const parts = fields.map((field) => tlvBytes(tbsDer, field));
  parts.splice(parts.length - 1, 0, encodeTlv(TAG.SEQUENCE, ...entries));
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
 *
 * A serial in keyferry's own form (lowercase hex of whole octets, no leading zero octet: what
 * `serialHex` reports and the database stores) is written from its digits straight into the
 * list, with no array per entry; any other form serialFromHex reads goes through it.
 */
export function revokedCertificatesDer(revoked: readonly RevokedEntry[]): Uint8Array {
  return encodeTlv(TAG.SEQUENCE, revokedEntriesDer(revoked));
}

/**
 * The entries of {@link revokedCertificatesDer}'s SEQUENCE, without its header: the encodings
 * of consecutive slices of a list, put one after the other, are the encoding of the whole.
 */
export function revokedEntriesDer(revoked: readonly RevokedEntry[]): Uint8Array {
  const count = revoked.length;
  // per entry: the serial's INTEGER content length, and its content when not written from the digits
  const serialLengths = new Uint8Array(count);
  const otherSerials = new Map<number, Uint8Array>();
  const contentLengths = new Uint32Array(count);
  const reasons: (Uint8Array | undefined)[] = new Array(count);
  let listLength = 0;
  for (let i = 0; i < count; i++) {
    const entry = revoked[i]!;
    let serialLength = ownFormSerialLength(entry.serialHex);
    if (serialLength === 0) {
      const content = serialContent(serialFromHex(entry.serialHex));
      otherSerials.set(i, content);
      serialLength = content.length;
    }
    let reason: Uint8Array | undefined;
    if (entry.reason !== undefined) {
      reason = REASON_EXTENSIONS.get(entry.reason);
      if (!reason) throw new TypeError(`unknown revocation reason ${JSON.stringify(entry.reason)}`);
    }
    serialLengths[i] = serialLength;
    reasons[i] = reason;
    const contentLength = tlvSize(serialLength) + timeSize(entry.revokedAt) + (reason?.length ?? 0);
    contentLengths[i] = contentLength;
    listLength += tlvSize(contentLength);
  }
  const writer = new DerWriter(listLength);
  for (let i = 0; i < count; i++) {
    const entry = revoked[i]!;
    writer.header(TAG.SEQUENCE, contentLengths[i]!).header(TAG.INTEGER, serialLengths[i]!);
    const other = otherSerials.get(i);
    if (other) writer.raw(other);
    // with the sign octet ownFormSerialLength counted when the content is longer than the digits
    else writer.positiveHex(entry.serialHex, serialLengths[i]! > entry.serialHex.length / 2);
    writer.time(entry.revokedAt);
    const reason = reasons[i];
    if (reason) writer.raw(reason);
  }
  return writer.finish();
}

/**
 * The INTEGER content length of a serial in keyferry's own form (lowercase hex, whole octets,
 * the first not zero, at most MAX_SERIAL_OCTETS with a sign octet), or 0 for any other form.
 */
function ownFormSerialLength(hex: string): number {
  const length = hex.length;
  if (length === 0 || length % 2 !== 0 || (hex.charCodeAt(0) === 0x30 && hex.charCodeAt(1) === 0x30))
    return 0;
  for (let i = 0; i < length; i++) {
    const c = hex.charCodeAt(i);
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return 0;
  }
  // a first digit of 8 or more sets the top bit: a zero octet keeps the number positive
  const octets = length / 2 + (hex.charCodeAt(0) >= 0x38 ? 1 : 0);
  return octets <= MAX_SERIAL_OCTETS ? octets : 0;
}

function extension(oid: string, value: unknown): Extension {
  return new Extension({ extnID: oid, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

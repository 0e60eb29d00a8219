/**
 * A direct DER reader for PKCS#10 requests (RFC 2986): the enrollment hot path reads every
 * field it needs with {@link readTlv} instead of building the ASN.1 library's object tree,
 * which cost ~20x the signature check. Rare shapes (a subject with a string type other than
 * UTF8/Printable/IA5String, extensions besides subjectAltName, attributes besides
 * extensionRequest) go to the library readers through {@link parseExactDer}, so the answer is
 * the same as theirs; test/x509-csr-fast.test.ts compares the two on valid requests and
 * test/x509-csr-differential.test.ts on 20,000 mutated ones.
 */
import { AsnConvert } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier, Attribute, Extensions, Name } from '@peculiar/asn1-x509';
import { bytesEqual, childrenOf, DerError, oidBytes, readTlv, type Tlv, u8 } from './der.ts';
import { summarizeExtensions } from './extensions.ts';
import { type DistinguishedName, describeName, describeRdns, type RawAttribute } from './name.ts';
import { OID } from './oids.ts';

/** What the reader found; SAN decoding waits for {@link requestedDnsNames} ("content is malformed"). */
export interface CsrFields {
  readonly version: number;
  readonly subject: DistinguishedName;
  readonly signatureAlgorithm: string;
  /** Values (DER of Extensions) of the extensionRequest attributes. */
  readonly extensionRequests: readonly Uint8Array[];
}

/** Thrown for a DER-valid structure that is not a certification request; message follows the colon. */
export class CsrShapeError extends Error {
  override readonly name = 'CsrShapeError';
}

const SAN_OID = oidBytes(OID.subjectAltName);
const EXTENSION_REQUEST_OID = oidBytes(OID.extensionRequest);
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Reads the certificationRequestInfo (`info`) and signatureAlgorithm TLVs of a request whose
 * outer shape the caller checked. DER errors inside and wrong shapes throw {@link CsrShapeError}.
 */
export function readCsrFields(der: Uint8Array, info: Tlv, algorithm: Tlv): CsrFields {
  try {
    const [version, subject, spki, attributes, extra] = childrenOf(der, info);
    if (version?.tag !== 0x02) throw new CsrShapeError('version is not an INTEGER');
    if (subject?.tag !== 0x30 || spki?.tag !== 0x30) throw new CsrShapeError('no subject and public key');
    // RFC 2986 requires the [0] attributes; the library reader tolerated its absence, so this does.
    if ((attributes !== undefined && attributes.tag !== 0xa0) || extra)
      throw new CsrShapeError('only [0] attributes may follow the public key');
    const [algorithmOid, parameters] = childrenOf(der, algorithm);
    if (algorithmOid?.tag !== 0x06) throw new CsrShapeError('signature algorithm has no OID');
    // Parameters other than none or NULL (05 00) are rare: the library checks them.
    if (parameters !== undefined && !(parameters.tag === 0x05 && parameters.end === parameters.valueStart))
      parseExactDer(
        der.subarray(algorithm.start, algorithm.end),
        AlgorithmIdentifier,
        'the signature algorithm',
      );
    return {
      version: smallInteger(der, version),
      subject: readName(der, subject),
      signatureAlgorithm: oidText(der, algorithmOid),
      extensionRequests: attributes === undefined ? [] : readExtensionRequests(der, attributes),
    };
  } catch (error) {
    if (error instanceof DerError) throw new CsrShapeError(error.message);
    throw error;
  }
}

/** DNS names of the subjectAltName extensions in extensionRequest values (throws when malformed). */
export function requestedDnsNames(values: readonly Uint8Array[]): string[] {
  const names: string[] = [];
  for (const value of values) {
    const fast = sanOnlyDnsNames(value);
    names.push(
      ...(fast ?? summarizeExtensions(parseExactDer(value, Extensions, 'extensionRequest')).dnsNames),
    );
  }
  return names;
}

/**
 * dNSNames when `value` is Extensions holding only one subjectAltName of dNSNames; undefined
 * otherwise (other GeneralName forms go to the library, which checks their encoding).
 */
function sanOnlyDnsNames(value: Uint8Array): string[] | undefined {
  const outer = readTlv(value, 0);
  if (outer.tag !== 0x30 || outer.end !== value.length) return undefined;
  const extensions = childrenOf(value, outer);
  if (extensions.length !== 1 || extensions[0]!.tag !== 0x30) return undefined;
  const parts = childrenOf(value, extensions[0]!);
  const id = parts[0];
  const octets = parts[parts.length - 1];
  if (parts.length < 2 || parts.length > 3 || id?.tag !== 0x06 || octets?.tag !== 0x04) return undefined;
  if (parts.length === 3 && (parts[1]!.tag !== 0x01 || parts[1]!.end - parts[1]!.valueStart !== 1))
    return undefined;
  if (!sameBytes(value, id, SAN_OID)) return undefined;
  const names = readTlv(value, octets.valueStart, octets.end);
  if (names.tag !== 0x30 || names.end !== octets.end) return undefined;
  const out: string[] = [];
  for (const name of childrenOf(value, names)) {
    if (name.tag !== 0x82) return undefined; // dNSName [2] IMPLICIT IA5String
    const text = ascii(value, name);
    if (text === undefined) return undefined;
    out.push(text);
  }
  return out;
}

function readExtensionRequests(der: Uint8Array, attributes: Tlv): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const attribute of childrenOf(der, attributes)) {
    const [type, values, extra] = childrenOf(der, attribute);
    if (attribute.tag !== 0x30 || type?.tag !== 0x06 || values?.tag !== 0x31 || extra) {
      throw new CsrShapeError('an attribute is not SEQUENCE { type, SET OF values }');
    }
    oidText(der, type); // throws for an encoding that is no OID
    if (!sameBytes(der, type, EXTENSION_REQUEST_OID)) {
      // Another attribute (challengePassword, …): rare, so the library checks its values.
      parseExactDer(der.subarray(attribute.start, attribute.end), Attribute, 'an attribute');
      continue;
    }
    for (const value of childrenOf(der, values)) out.push(der.subarray(value.start, value.end));
  }
  return out;
}

/** The subject; a string type this reader does not decode sends the name to the library. */
function readName(der: Uint8Array, name: Tlv): DistinguishedName {
  const bytes = der.subarray(name.start, name.end);
  const rdns: RawAttribute[][] = [];
  for (const rdn of childrenOf(der, name)) {
    if (rdn.tag !== 0x31) throw new CsrShapeError('subject RDN is not a SET');
    const list: RawAttribute[] = [];
    for (const atv of childrenOf(der, rdn)) {
      const [type, value, extra] = childrenOf(der, atv);
      if (atv.tag !== 0x30 || type?.tag !== 0x06 || value === undefined || extra) {
        throw new CsrShapeError('subject attribute is not SEQUENCE { type, value }');
      }
      let text: string | undefined;
      if (value.tag === 0x0c) {
        text = utf8(der, value);
        if (text === undefined) throw new CsrShapeError('a subject UTF8String is not valid UTF-8');
      } else if (value.tag === 0x13 || value.tag === 0x16) text = ascii(der, value);
      if (text === undefined) return describeName(parseExactDer(bytes, Name, 'the subject'), bytes);
      list.push({ oid: oidText(der, type), value: text, hex: false });
    }
    rdns.push(list);
  }
  return describeRdns(rdns, bytes);
}

/**
 * The ASN.1 library's reading of `bytes` as `type`, refused unless it re-encodes to the same
 * bytes: the library recovers from some non-DER input (a SEQUENCE tag changed to 0xb0, a
 * wrong inner length, unused bits in a BIT STRING), which keyferry must refuse.
 */
export function parseExactDer<T>(bytes: Uint8Array, type: new () => T, what: string): T {
  const value = AsnConvert.parse(bytes, type);
  if (!bytesEqual(u8(AsnConvert.serialize(value)), bytes)) {
    throw new CsrShapeError(`${what} is not DER (it does not re-encode to the same bytes)`);
  }
  return value;
}

function utf8(der: Uint8Array, tlv: Tlv): string | undefined {
  try {
    return UTF8.decode(der.subarray(tlv.valueStart, tlv.end));
  } catch {
    return undefined;
  }
}

function ascii(der: Uint8Array, tlv: Tlv): string | undefined {
  let out = '';
  for (let i = tlv.valueStart; i < tlv.end; i++) {
    const c = der[i]!;
    if (c >= 0x80) return undefined;
    out += String.fromCharCode(c);
  }
  return out;
}

/** Dotted text of an OBJECT IDENTIFIER TLV. */
export function oidText(der: Uint8Array, tlv: Tlv): string {
  if (tlv.end === tlv.valueStart) throw new DerError(`empty OID at byte ${tlv.start}`);
  let out = '';
  let value = 0;
  let first = true;
  for (let i = tlv.valueStart; i < tlv.end; i++) {
    const b = der[i]!;
    if (value === 0 && b === 0x80) throw new DerError(`non-minimal OID at byte ${tlv.start}`);
    value = value * 128 + (b & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER) throw new DerError(`OID arc too large at byte ${tlv.start}`);
    if (b & 0x80) continue;
    if (first) out = value < 40 ? `0.${value}` : value < 80 ? `1.${value - 40}` : `2.${value - 80}`;
    else out += `.${value}`;
    first = false;
    value = 0;
  }
  if (der[tlv.end - 1]! & 0x80) throw new DerError(`truncated OID at byte ${tlv.start}`);
  return out;
}

function smallInteger(der: Uint8Array, tlv: Tlv): number {
  const length = tlv.end - tlv.valueStart;
  if (length === 0 || length > 6) throw new CsrShapeError('version is not a small INTEGER');
  let value = 0;
  for (let i = tlv.valueStart; i < tlv.end; i++) value = value * 256 + der[i]!;
  return der[tlv.valueStart]! & 0x80 ? value - 256 ** length : value;
}

function sameBytes(der: Uint8Array, tlv: Tlv, expected: Uint8Array): boolean {
  if (tlv.end - tlv.start !== expected.length) return false;
  for (let i = 0; i < expected.length; i++) if (der[tlv.start + i] !== expected[i]) return false;
  return true;
}

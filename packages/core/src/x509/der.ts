/**
 * A few DER primitives written by hand. The ASN.1 library builds and parses whole structures;
 * these exist for the two things it cannot do cheaply: take the exact bytes of a part of a
 * signed structure (a signature covers bytes, not a re-encoding of them) and splice
 * per-certificate values into a precomputed template on the issuance hot path.
 */

/** Universal tags used here (single-byte identifiers only). */
export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** One tag-length-value found in a buffer: `start` is the tag's offset, `end` is one past the value. */
export interface Tlv {
  readonly tag: number;
  readonly start: number;
  readonly valueStart: number;
  readonly end: number;
}

/** A malformed encoding; callers turn it into the KeyferryError that fits what they parse. */
export class DerError extends Error {
  override readonly name = 'DerError';
}

/**
 * Reads the TLV at `offset`, refusing what DER forbids: indefinite or non-minimal lengths,
 * multi-byte tags (none of the structures handled here use them) and values running past `limit`.
 */
export function readTlv(der: Uint8Array, offset: number, limit: number = der.length): Tlv {
  if (offset + 2 > limit) throw new DerError(`truncated at byte ${offset}`);
  const tag = der[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError(`multi-byte tag at byte ${offset}`);
  const first = der[offset + 1]!;
  let length = first;
  let valueStart = offset + 2;
  if (first & 0x80) {
    const count = first & 0x7f;
    if (count === 0) throw new DerError(`indefinite length at byte ${offset}`);
    if (count > 4) throw new DerError(`length too large at byte ${offset}`);
    if (valueStart + count > limit) throw new DerError(`truncated length at byte ${offset}`);
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + der[valueStart + i]!;
    if (length < 0x80 || der[valueStart] === 0) throw new DerError(`non-minimal length at byte ${offset}`);
    valueStart += count;
  }
  const end = valueStart + length;
  if (end > limit) throw new DerError(`value runs past the end at byte ${offset}`);
  return { tag, start: offset, valueStart, end };
}

/** Reads the one TLV that must fill `der` exactly, with the expected tag. */
export function readWhole(der: Uint8Array, tag: number): Tlv {
  const tlv = readTlv(der, 0);
  if (tlv.tag !== tag) throw new DerError(`expected tag 0x${hex2(tag)}, found 0x${hex2(tlv.tag)}`);
  if (tlv.end !== der.length)
    throw new DerError(`${der.length - tlv.end} trailing bytes after the structure`);
  return tlv;
}

/** The TLVs directly inside a constructed TLV, in order. */
export function childrenOf(der: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  let offset = parent.valueStart;
  while (offset < parent.end) {
    const child = readTlv(der, offset, parent.end);
    out.push(child);
    offset = child.end;
  }
  return out;
}

/** The whole encoding (tag, length and value) of a TLV. */
export function tlvBytes(der: Uint8Array, tlv: Tlv): Uint8Array {
  return der.subarray(tlv.start, tlv.end);
}

/** The value bytes of a TLV. */
export function valueBytes(der: Uint8Array, tlv: Tlv): Uint8Array {
  return der.subarray(tlv.valueStart, tlv.end);
}

/** A DER length field. */
export function encodeLength(length: number): Uint8Array {
  if (length < 0x80) return Uint8Array.of(length);
  if (length < 0x100) return Uint8Array.of(0x81, length);
  if (length < 0x10000) return Uint8Array.of(0x82, length >> 8, length & 0xff);
  if (length < 0x1000000) return Uint8Array.of(0x83, length >> 16, (length >> 8) & 0xff, length & 0xff);
  throw new RangeError(`DER length ${length} is larger than this encoder supports`);
}

/** Tag + length + the concatenated contents. */
export function encodeTlv(tag: number, ...contents: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of contents) length += part.length;
  const header = encodeLength(length);
  const out = new Uint8Array(1 + header.length + length);
  out[0] = tag;
  out.set(header, 1);
  let offset = 1 + header.length;
  for (const part of contents) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Concatenates byte arrays. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * The content octets of a non-negative INTEGER whose big-endian magnitude is `magnitude`:
 * leading zeros dropped, one 0x00 put back when the top bit would read as a sign.
 */
export function unsignedIntegerContent(magnitude: Uint8Array): Uint8Array {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const trimmed = magnitude.subarray(i);
  if (trimmed.length === 0) return Uint8Array.of(0);
  if (trimmed[0]! & 0x80) return concatBytes([Uint8Array.of(0), trimmed]);
  return trimmed;
}

/**
 * True when RFC 5280 §4.1.2.5 wants UTCTime for this date (1950 through 2049); GeneralizedTime
 * otherwise.
 */
export function usesUtcTime(date: Date): boolean {
  const year = date.getUTCFullYear();
  return year >= 1950 && year < 2050;
}

/** Lowercase hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** Byte-wise equality. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/** A fresh Uint8Array over an ArrayBuffer the ASN.1 library returned. */
export function u8(buffer: ArrayBuffer | ArrayBufferView): Uint8Array {
  if (buffer instanceof ArrayBuffer) return new Uint8Array(buffer);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/** The whole DER of an OID TLV (short OIDs only). */
export function oidBytes(dotted: string): Uint8Array {
  const arcs = dotted.split('.').map(Number);
  const body: number[] = [];
  const push = (n: number): void => {
    const chunk = [n & 0x7f];
    for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    body.push(...chunk);
  };
  push(arcs[0]! * 40 + arcs[1]!);
  for (const arc of arcs.slice(2)) push(arc);
  return Uint8Array.of(0x06, body.length, ...body);
}

import { encodeLength, usesUtcTime } from './der.ts';

/** Bytes taken by a TLV whose value is `contentLength` bytes (single-byte tag). */
export function tlvSize(contentLength: number): number {
  if (contentLength < 0x80) return 2 + contentLength;
  if (contentLength < 0x100) return 3 + contentLength;
  if (contentLength < 0x10000) return 4 + contentLength;
  return 1 + encodeLength(contentLength).length + contentLength;
}

/** Bytes taken by the Time TLV {@link DerWriter.time} writes for `date`. */
export function timeSize(date: Date): number {
  return usesUtcTime(date) ? 15 : 17;
}

/**
 * Writes DER into one buffer sized in advance. The fast issuance path computes every length
 * first and then writes each byte once: allocating a small array per TLV cost more than the
 * rest of the encoding together.
 */
export class DerWriter {
  readonly #bytes: Uint8Array;
  #at = 0;

  constructor(size: number) {
    this.#bytes = new Uint8Array(size);
  }

  /** A tag and the length of the value that the next writes fill. */
  header(tag: number, contentLength: number): this {
    const bytes = this.#bytes;
    bytes[this.#at++] = tag;
    if (contentLength < 0x80) {
      bytes[this.#at++] = contentLength;
    } else {
      const length = encodeLength(contentLength);
      bytes.set(length, this.#at);
      this.#at += length.length;
    }
    return this;
  }

  /** Bytes already encoded. */
  raw(data: Uint8Array): this {
    this.#bytes.set(data, this.#at);
    this.#at += data.length;
    return this;
  }

  /** ASCII text (the caller checked the characters). */
  ascii(text: string): this {
    const bytes = this.#bytes;
    for (let i = 0; i < text.length; i++) bytes[this.#at++] = text.charCodeAt(i);
    return this;
  }

  /**
   * The octets lowercase hex `digits` (whole octets, checked by the caller) names, after a zero
   * octet when `signOctet`: an INTEGER's content written without an array of its own.
   */
  positiveHex(digits: string, signOctet: boolean): this {
    const bytes = this.#bytes;
    if (signOctet) bytes[this.#at++] = 0;
    for (let i = 0; i < digits.length; i += 2) {
      bytes[this.#at++] = (hexValue(digits.charCodeAt(i)) << 4) | hexValue(digits.charCodeAt(i + 1));
    }
    return this;
  }

  /** A whole Time TLV, UTCTime or GeneralizedTime by RFC 5280's rule, to the second. */
  time(date: Date): this {
    const utc = usesUtcTime(date);
    this.header(utc ? 0x17 : 0x18, utc ? 13 : 15);
    const year = date.getUTCFullYear();
    if (utc) this.#digits(year % 100, 2);
    else this.#digits(year, 4);
    this.#digits(date.getUTCMonth() + 1, 2);
    this.#digits(date.getUTCDate(), 2);
    this.#digits(date.getUTCHours(), 2);
    this.#digits(date.getUTCMinutes(), 2);
    this.#digits(date.getUTCSeconds(), 2);
    this.#bytes[this.#at++] = 0x5a; // 'Z'
    return this;
  }

  /** The buffer; throws if the sizes computed in advance were wrong. */
  finish(): Uint8Array {
    if (this.#at !== this.#bytes.length) {
      throw new Error(`DER writer filled ${this.#at} of ${this.#bytes.length} bytes`);
    }
    return this.#bytes;
  }

  #digits(value: number, count: number): void {
    for (let i = count - 1; i >= 0; i--) {
      this.#bytes[this.#at + i] = 0x30 + (value % 10);
      value = Math.floor(value / 10);
    }
    this.#at += count;
  }
}

/** The value of one lowercase hex digit's character code. */
function hexValue(code: number): number {
  return code <= 0x39 ? code - 0x30 : code - 0x57;
}

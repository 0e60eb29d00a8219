import { randomFillSync } from 'node:crypto';
import { toHex, u8, unsignedIntegerContent } from './der.ts';

/** RFC 5280 §4.1.2.2: a serial number is at most 20 octets. */
export const MAX_SERIAL_OCTETS = 20;

/**
 * A random positive serial of `bits` bits (a multiple of 8, at most 160) as INTEGER content
 * octets. The top bit is cleared so the number stays positive without a padding octet, which
 * keeps a 160-bit serial within the 20 octets RFC 5280 allows.
 */
export function randomSerial(bits: number): Uint8Array {
  if (!Number.isInteger(bits) || bits % 8 !== 0 || bits < 64 || bits > 160) {
    throw new TypeError(`serial size must be a multiple of 8 from 64 to 160 bits, got ${bits}`);
  }
  for (;;) {
    const bytes = pooledRandomBytes(bits / 8);
    bytes[0]! &= 0x7f;
    const content = unsignedIntegerContent(bytes);
    if (content.length > 1 || content[0] !== 0) return content;
  }
}

/**
 * INTEGER content octets for a serial given as an unsigned big-endian number; refuses zero
 * and anything past 20 octets (RFC 5280 §4.1.2.2).
 */
export function serialContent(magnitude: Uint8Array): Uint8Array {
  const content = unsignedIntegerContent(magnitude);
  if (content.length === 1 && content[0] === 0) throw new TypeError('a certificate serial must be positive');
  if (content.length > MAX_SERIAL_OCTETS) {
    throw new TypeError(
      `a certificate serial has at most ${MAX_SERIAL_OCTETS} octets, got ${content.length}`,
    );
  }
  return content;
}

/** Lowercase hex of a serial's value (no sign octet, even length), as `serialHex` reports it. */
export function serialToHex(content: Uint8Array): string {
  let i = 0;
  while (i < content.length - 1 && content[i] === 0) i++;
  return toHex(content.subarray(i));
}

/** The unsigned bytes of a serial written in hex (an optional `0x`, colons allowed). */
export function serialFromHex(hex: string): Uint8Array {
  const clean = hex.replace(/^0x/i, '').replace(/:/g, '');
  if (!/^[0-9a-fA-F]+$/.test(clean)) throw new TypeError(`invalid serial ${JSON.stringify(hex)}`);
  return u8(Buffer.from(clean.length % 2 === 0 ? clean : '0' + clean, 'hex'));
}

// One call into the CSPRNG per 4 KiB instead of one per certificate; each byte is handed out
// once. Measured at 2.3 µs per randomBytes(16) call against a 27 µs signature.
const POOL = new Uint8Array(4096);
let poolAt = POOL.length;

function pooledRandomBytes(count: number): Uint8Array {
  if (poolAt + count > POOL.length) {
    randomFillSync(POOL);
    poolAt = 0;
  }
  const out = POOL.slice(poolAt, poolAt + count);
  POOL.fill(0, poolAt, poolAt + count);
  poolAt += count;
  return out;
}

/** A serial in base 10, as fioctl names device CAs (`--ca-serial`, `disabled-ca-serials`). */
export function serialToDecimal(serialHex: string): string {
  return BigInt(`0x${serialHex.replace(/^0x/i, '').replace(/:/g, '')}`).toString(10);
}

/** The `serialHex` form of a base-10 serial; refuses anything but digits. */
export function serialFromDecimal(decimal: string): string {
  if (!/^[0-9]{1,49}$/.test(decimal))
    throw new TypeError(`${JSON.stringify(decimal)} is not a base 10 serial`);
  const hex = BigInt(decimal).toString(16);
  return hex.length % 2 === 0 ? hex : `0${hex}`;
}

import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  DEVICE_ID_TOO_LARGE,
  DEVICE_UID_BYTES,
  deviceIdFromUid,
  deviceIdProblem,
  deviceIdToUid,
  invalidDeviceIdMessage,
  isDeviceId,
  parseDeviceId,
  tryParseDeviceId,
} from '../src/device-id.ts';

const GUIDE_HEX = '0x04005001eee3ba1ee96e60047e57da0f6880';
const GUIDE_DEC = '348555492004256518532939906410866457667712';

const UID_SAMPLES = 2000;
/** The largest UID with a 42-digit decimal form (36 hex digits reach past it). */
const LARGEST_DECIMAL_UID = 10n ** 42n - 1n;

/** Hex digits in random case: both are accepted, and the result is lower case. */
function mixCase(hex: string): string {
  return [...hex].map((c) => (Math.random() < 0.5 ? c.toUpperCase() : c)).join('');
}

describe('device ids', () => {
  it('converts the guide example both ways', () => {
    expect(parseDeviceId(GUIDE_HEX)).toEqual({ decimal: GUIDE_DEC, hex: GUIDE_HEX.slice(2) });
    expect(parseDeviceId(GUIDE_DEC).hex).toBe(GUIDE_HEX.slice(2));
    expect(parseDeviceId(GUIDE_HEX.toUpperCase().replace('0X', '0x')).decimal).toBe(GUIDE_DEC);
  });

  it('accepts every 36-hex-digit UID below 10^42 with its decimal value, and no other (property)', () => {
    // SE05x UIDs begin 0x04 (all valid); the rest vary the lead byte, so some lie past 10^42.
    const uids = [
      ...Array.from({ length: UID_SAMPLES }, (_, i) => {
        const uid = randomBytes(DEVICE_UID_BYTES);
        if (i % 3 !== 0) uid[0] = 0x04;
        return uid.toString('hex');
      }),
      LARGEST_DECIMAL_UID.toString(16).padStart(DEVICE_UID_BYTES * 2, '0'),
      (LARGEST_DECIMAL_UID + 1n).toString(16).padStart(DEVICE_UID_BYTES * 2, '0'),
    ];
    let accepted = 0;
    for (const hex of uids) {
      // an independent oracle: BigInt's own reading of the digits
      const value = BigInt('0x' + hex);
      const id = tryParseDeviceId('0x' + mixCase(hex));
      if (value > LARGEST_DECIMAL_UID) {
        expect(id, hex).toBeUndefined();
        continue;
      }
      accepted++;
      expect(id, hex).toEqual({ decimal: value.toString(10).padStart(42, '0'), hex });
      expect(parseDeviceId(id!.decimal)).toEqual(id);
      expect(deviceIdFromUid(Buffer.from(hex, 'hex'))).toEqual(id);
      expect(Buffer.from(deviceIdToUid(id!)).toString('hex')).toBe(hex);
    }
    // every 0x04… sample and the boundary itself, at least: the loop cannot pass by skipping
    expect(accepted).toBeGreaterThanOrEqual(Math.floor((UID_SAMPLES * 2) / 3) + 1);
  });

  it('refuses every near-miss and names the id and both forms', () => {
    const nearMisses = [
      GUIDE_HEX.slice(0, -1), // 35 hex digits
      GUIDE_HEX + '0', // 37 hex digits
      GUIDE_HEX.replace('0x', '0X'),
      GUIDE_HEX.replace('0x', ''),
      ' ' + GUIDE_HEX,
      GUIDE_HEX + ' ',
      GUIDE_HEX.replace('e', 'g'),
      GUIDE_DEC.slice(1), // 41 digits
      GUIDE_DEC + '1', // 43 digits
      '+' + GUIDE_DEC.slice(1),
      GUIDE_DEC.replace('3', '٣'), // non-ASCII digit
      '',
      '0x',
      '9'.repeat(42).replace(/^9/, 'a'),
      // what files and spreadsheets produce
      GUIDE_HEX + '\n',
      GUIDE_HEX + '\r',
      '\t' + GUIDE_DEC,
      '\uFEFF' + GUIDE_HEX,
      GUIDE_HEX.slice(0, 20) + ' ' + GUIDE_HEX.slice(20, -1),
      GUIDE_HEX.slice(0, 20) + '_' + GUIDE_HEX.slice(21),
      '-' + GUIDE_DEC.slice(1),
      GUIDE_DEC.slice(0, 41) + '.',
      '3.4855549200425652e+41', // the id after a round trip through a JS number
      '0x0x' + GUIDE_HEX.slice(4),
      '0x' + GUIDE_DEC.slice(0, 36).replace(/^./, 'z'),
      GUIDE_DEC.replace('3', '３'), // full-width digit
      '"' + GUIDE_HEX + '"',
    ];
    for (const bad of nearMisses) {
      expect(isDeviceId(bad), bad).toBe(false);
      expect(() => parseDeviceId(bad)).toThrowError(/0x followed by 36 hex digits, or 42 decimal digits/);
      try {
        parseDeviceId(bad);
      } catch (err) {
        expect((err as { code: string }).code).toBe('invalid_device_id');
        expect((err as Error).message).toContain(JSON.stringify(bad));
      }
    }
  });

  it('an id of the right form but too large a value is told its value does not fit 42 decimal digits, not the form it used', () => {
    const largest = `0x${(10n ** 42n - 1n).toString(16).padStart(36, '0')}`;
    expect(parseDeviceId(largest).decimal).toBe('9'.repeat(42));
    const justOver = `0x${(10n ** 42n).toString(16).padStart(36, '0')}`;
    for (const bad of ['0xff005001eee3ba1ee96e60047e57da0f6880', `0x${'f'.repeat(36)}`, justOver]) {
      expect(isDeviceId(bad), bad).toBe(false);
      expect(deviceIdProblem(bad)).toBe(DEVICE_ID_TOO_LARGE);
      expect(() => parseDeviceId(bad)).toThrowError(
        `invalid device id "${bad}": its value does not fit the 42-digit decimal form EdgeLock 2GO ids use (the largest is ${largest}); SE05x UIDs start 0x04: read the UID again (keyferry-agent uid)`,
      );
      expect(invalidDeviceIdMessage(bad)).not.toContain('36 hex digits');
    }
    expect(deviceIdProblem('0x12')).toBe('use 0x followed by 36 hex digits, or 42 decimal digits');
    expect(deviceIdProblem(GUIDE_HEX)).toBeUndefined();
    expect(() => invalidDeviceIdMessage(GUIDE_HEX)).toThrow(TypeError);
  });

  it('keeps leading zeros in the canonical decimal form', () => {
    const id = parseDeviceId('0x' + '0'.repeat(35) + '1');
    expect(id.decimal).toBe('0'.repeat(41) + '1');
    expect(parseDeviceId(id.decimal).hex).toBe('0'.repeat(35) + '1');
  });

  it('refuses a UID of the wrong length', () => {
    expect(() => deviceIdFromUid(new Uint8Array(17))).toThrow(TypeError);
  });
});

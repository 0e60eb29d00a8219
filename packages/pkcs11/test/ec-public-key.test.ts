import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { p256SpkiFromEcPoint } from '@keyferry/pkcs11';
import { describe, expect, it } from 'vitest';

describe('p256SpkiFromEcPoint', () => {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  const point = spki.subarray(-65);

  it('builds the SPKI node:crypto exports, from a wrapped or a bare point', () => {
    expect(p256SpkiFromEcPoint(Buffer.concat([Buffer.from([0x04, 0x41]), point]))).toEqual(spki);
    expect(p256SpkiFromEcPoint(point)).toEqual(spki);
    expect(
      createPublicKey({ key: p256SpkiFromEcPoint(point), format: 'der', type: 'spki' }).equals(publicKey),
    ).toBe(true);
  });

  it('refuses a compressed or truncated point', () => {
    const compressed = Buffer.concat([Buffer.from([0x02]), point.subarray(1, 33)]);
    expect(() => p256SpkiFromEcPoint(compressed)).toThrow(
      expect.objectContaining({ code: 'key_custody_error' }),
    );
    expect(() => p256SpkiFromEcPoint(point.subarray(0, 64))).toThrow(/not an uncompressed P-256 point/);
  });
});

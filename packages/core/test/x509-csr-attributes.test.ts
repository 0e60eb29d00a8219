import { describe, expect, it } from 'vitest';
import { deviceCsrAttributes } from '../src/index.ts';

describe('deviceCsrAttributes (RFC 7030 §4.5.2 CsrAttrs)', () => {
  it('is SEQUENCE { SEQUENCE { ecPublicKey, SET { secp256r1 } }, ecdsa-with-SHA256 } in DER', () => {
    // written out by hand from X.690 and the OIDs of RFC 5480 / RFC 5758
    const expected =
      '3021' +
      '3015' +
      '06072a8648ce3d0201' + // id-ecPublicKey 1.2.840.10045.2.1
      '310a' +
      '06082a8648ce3d030107' + // secp256r1 1.2.840.10045.3.1.7
      '06082a8648ce3d040302'; // ecdsa-with-SHA256 1.2.840.10045.4.3.2
    expect(Buffer.from(deviceCsrAttributes()).toString('hex')).toBe(expected);
  });
});

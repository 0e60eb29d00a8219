import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { ECParameters } from '@peculiar/asn1-ecc';
import { SubjectPublicKeyInfo } from '@peculiar/asn1-x509';
import { parseExactDer } from './csr-der.ts';
import { bytesEqual, childrenOf, DerError, readWhole, TAG, u8 } from './der.ts';
import { OID } from './oids.ts';

/** The kind of a public key, as profiles and refusals talk about it. */
export type KeyAlgorithm = 'P-256' | 'P-384' | 'P-521' | 'RSA' | 'Ed25519' | 'other';

/**
 * The fixed first 27 bytes of every P-256 SubjectPublicKeyInfo with an uncompressed point
 * (RFC 5480): SEQUENCE, id-ecPublicKey, secp256r1, BIT STRING header and the 0x04 point tag.
 * The device profile requires exactly this form, so the hot path checks a key with a compare.
 */
export const P256_SPKI_PREFIX = Uint8Array.from(
  Buffer.from('3059301306072a8648ce3d020106082a8648ce3d03010703420004', 'hex'),
);
/** Length of a P-256 SubjectPublicKeyInfo with an uncompressed point. */
export const P256_SPKI_LENGTH = 91;

const CURVES: Record<string, KeyAlgorithm> = {
  [OID.secp256r1]: 'P-256',
  [OID.secp384r1]: 'P-384',
  [OID.secp521r1]: 'P-521',
};

/** The algorithm of a DER SubjectPublicKeyInfo; `other` for anything keyferry does not name. */
export function keyAlgorithmOf(spki: Uint8Array): KeyAlgorithm {
  if (isP256Spki(spki)) return 'P-256';
  // Strict where the library is lax: DER only, and no unused bits in the key's BIT STRING.
  const info = parseExactDer(spki, SubjectPublicKeyInfo, 'the public key');
  subjectPublicKeyBits(spki);
  switch (info.algorithm.algorithm) {
    case OID.rsaEncryption:
      return 'RSA';
    case OID.ed25519:
      return 'Ed25519';
    case OID.ecPublicKey: {
      const parameters = info.algorithm.parameters;
      if (!parameters) return 'other';
      const curve = parseExactDer(u8(parameters), ECParameters, 'the curve').namedCurve;
      return (curve !== undefined && CURVES[curve]) || 'other';
    }
    default:
      return 'other';
  }
}

/** True for a P-256 SubjectPublicKeyInfo in the canonical uncompressed form (91 bytes). */
export function isP256Spki(spki: Uint8Array): boolean {
  return (
    spki.length === P256_SPKI_LENGTH &&
    bytesEqual(spki.subarray(0, P256_SPKI_PREFIX.length), P256_SPKI_PREFIX)
  );
}

/**
 * The key identifier of RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. It is
 * what openssl and most CAs compute, so SKI/AKI pairs match across tools.
 */
export function keyIdentifier(spki: Uint8Array): Uint8Array {
  const bits = subjectPublicKeyBits(spki);
  return u8(createHash('sha1').update(bits).digest());
}

/** The subjectPublicKey BIT STRING contents without the unused-bits octet. */
function subjectPublicKeyBits(spki: Uint8Array): Uint8Array {
  const seq = readWhole(spki, TAG.SEQUENCE);
  const [algorithm, bitString] = childrenOf(spki, seq);
  if (algorithm?.tag !== TAG.SEQUENCE || bitString?.tag !== TAG.BIT_STRING || bitString.end !== seq.end) {
    throw new DerError('not a SubjectPublicKeyInfo');
  }
  if (spki[bitString.valueStart] !== 0) throw new DerError('public key bit string has unused bits');
  return spki.subarray(bitString.valueStart + 1, bitString.end);
}

/**
 * A node:crypto public key for a DER SubjectPublicKeyInfo (throws on an invalid key). A
 * canonical P-256 key is imported as a JWK of its coordinates: with OpenSSL 3 that is ~40%
 * cheaper than the DER decoder (≈75 against ≈120 µs), and it checks the point the same way.
 */
export function publicKeyObject(spki: Uint8Array): KeyObject {
  if (isP256Spki(spki)) {
    const b64 = (from: number, to: number): string =>
      Buffer.from(spki.buffer, spki.byteOffset + from, to - from).toString('base64url');
    return createPublicKey({
      key: { kty: 'EC', crv: 'P-256', x: b64(27, 59), y: b64(59, 91) },
      format: 'jwk',
    });
  }
  return createPublicKey({
    key: Buffer.from(spki.buffer, spki.byteOffset, spki.byteLength),
    format: 'der',
    type: 'spki',
  });
}

/**
 * True when two SubjectPublicKeyInfos hold the same key, even when encoded differently (a
 * compressed and an uncompressed EC point). Identical bytes are equal without decoding;
 * otherwise a side that is not a valid key makes the answer false.
 */
export function publicKeysEqual(spkiA: Uint8Array, spkiB: Uint8Array): boolean {
  if (bytesEqual(spkiA, spkiB)) return true;
  try {
    return publicKeyObject(spkiA).equals(publicKeyObject(spkiB));
  } catch {
    return false;
  }
}

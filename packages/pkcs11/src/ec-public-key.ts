import { KeyferryError } from '@keyferry/core';

/** DER of the named-curve OID prime256v1 (1.2.840.10045.3.1.7): the CKA_EC_PARAMS of a P-256 key. */
export const P256_EC_PARAMS = Buffer.from('06082a8648ce3d030107', 'hex');

/**
 * Every P-256 SubjectPublicKeyInfo starts with these bytes: SEQUENCE, AlgorithmIdentifier
 * {id-ecPublicKey, prime256v1}, and the BIT STRING header with zero unused bits. Only the
 * 65-byte uncompressed point follows, so no ASN.1 encoder is needed.
 */
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');

const UNCOMPRESSED_POINT_LENGTH = 65;

/**
 * Builds the DER SubjectPublicKeyInfo of a P-256 public key from its CKA_EC_POINT.
 *
 * PKCS#11 says CKA_EC_POINT is a DER OCTET STRING wrapping the point (SoftHSM, OP-TEE); some
 * tokens return the bare point. Both are accepted; anything else is refused.
 */
export function p256SpkiFromEcPoint(ecPoint: Uint8Array): Buffer {
  let point = ecPoint;
  if (
    point.length === UNCOMPRESSED_POINT_LENGTH + 2 &&
    point[0] === 0x04 &&
    point[1] === UNCOMPRESSED_POINT_LENGTH
  ) {
    point = point.subarray(2);
  }
  if (point.length !== UNCOMPRESSED_POINT_LENGTH || point[0] !== 0x04) {
    throw new KeyferryError(
      'key_custody_error',
      `the token returned a CKA_EC_POINT of ${ecPoint.length} bytes that is not an uncompressed P-256 point; ` +
        'use a token that stores P-256 keys with uncompressed points',
    );
  }
  return Buffer.concat([P256_SPKI_PREFIX, point]);
}

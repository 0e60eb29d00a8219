import { createHash, createPublicKey, type KeyObject, sign } from 'node:crypto';
import {
  concatBytes,
  DerError,
  encodeTlv,
  readTlv,
  readWhole,
  TAG,
  u8,
  unsignedIntegerContent,
} from './der.ts';
import { isP256Spki } from './public-key.ts';

/**
 * What signs certificates, CSRs and CRLs: a P-256 key wherever it lives (a soft key here, a
 * PKCS#11 token in packages/pkcs11). Everything keyferry signs is ecdsa-with-SHA256.
 */
export interface Signer {
  /** DER SubjectPublicKeyInfo of the signing key (P-256). */
  readonly publicKeySpki: Uint8Array;
  /**
   * Signs SHA-256(data) and returns a DER ECDSA-Sig-Value. A token without a combined
   * hash-and-sign mechanism (SoftHSM has no CKM_ECDSA_SHA256) hashes with {@link sha256} and
   * signs the digest with plain ECDSA, then converts with {@link ecdsaRawToDer}.
   */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

/** SHA-256 of `data`. */
export function sha256(data: Uint8Array): Uint8Array {
  return u8(createHash('sha256').update(data).digest());
}

/**
 * A {@link Signer} over a private P-256 key held by node:crypto. Throws TypeError for any
 * other key, so a wrong key file fails when loaded rather than at the first signature.
 *
 * The curve is read from the key's SPKI, not from `asymmetricKeyDetails`: on Node 20 that getter
 * holds the key's mutex while it allocates the curve's name, and a garbage collection at that
 * moment that finalizes the job which generated the key (generateKeyPairSync, then softSigner
 * at once) locks the same mutex in the job's destructor: the thread waits on itself for good.
 * It hung the bench's load generator once (gdb: ~KeyGenJob under GetEcKeyDetail).
 */
export function softSigner(privateKey: KeyObject): Signer {
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ec') {
    throw new TypeError('softSigner needs a private EC key');
  }
  const publicKeySpki = u8(createPublicKey(privateKey).export({ format: 'der', type: 'spki' }));
  if (!isP256Spki(publicKeySpki)) throw new TypeError('softSigner needs a P-256 key, got another curve');
  return {
    publicKeySpki,
    sign: (data) => Promise.resolve(u8(sign('sha256', data, { key: privateKey, dsaEncoding: 'der' }))),
  };
}

/**
 * Converts a raw ECDSA signature (r || s, each `size` bytes, as PKCS#11 returns it) to a DER
 * ECDSA-Sig-Value. The size is half the input: 64 bytes for P-256, 96 for P-384.
 */
export function ecdsaRawToDer(raw: Uint8Array): Uint8Array {
  if (raw.length === 0 || raw.length % 2 !== 0 || raw.length > 132) {
    throw new TypeError(`a raw ECDSA signature is r || s of equal sizes, got ${raw.length} bytes`);
  }
  const half = raw.length / 2;
  const r = encodeTlv(TAG.INTEGER, unsignedIntegerContent(raw.subarray(0, half)));
  const s = encodeTlv(TAG.INTEGER, unsignedIntegerContent(raw.subarray(half)));
  return encodeTlv(TAG.SEQUENCE, r, s);
}

/**
 * Converts a DER ECDSA-Sig-Value to raw r || s with each half `size` bytes (32 for P-256).
 * Throws TypeError when the input is not such a value or a number does not fit.
 */
export function ecdsaDerToRaw(der: Uint8Array, size = 32): Uint8Array {
  try {
    const seq = readWhole(der, TAG.SEQUENCE);
    const r = readTlv(der, seq.valueStart, seq.end);
    const s = readTlv(der, r.end, seq.end);
    if (r.tag !== TAG.INTEGER || s.tag !== TAG.INTEGER || s.end !== seq.end) {
      throw new DerError('not SEQUENCE { INTEGER, INTEGER }');
    }
    return concatBytes([
      fixedWidth(der.subarray(r.valueStart, r.end), size),
      fixedWidth(der.subarray(s.valueStart, s.end), size),
    ]);
  } catch (error) {
    if (error instanceof DerError) throw new TypeError(`not a DER ECDSA signature: ${error.message}`);
    throw error;
  }
}

function fixedWidth(integer: Uint8Array, size: number): Uint8Array {
  let i = 0;
  while (i < integer.length && integer[i] === 0) i++;
  const magnitude = integer.subarray(i);
  if (magnitude.length > size)
    throw new DerError(`a number has ${magnitude.length} bytes, more than ${size}`);
  const out = new Uint8Array(size);
  out.set(magnitude, size - magnitude.length);
  return out;
}

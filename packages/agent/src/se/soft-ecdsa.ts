import { createECDH, type KeyObject } from 'node:crypto';
import { ecdsaRawToDer } from '@keyferry/core';

// Order of the P-256 group (FIPS 186-4 D.1.2.3).
const N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

const big = (b64url: string) => BigInt(`0x${Buffer.from(b64url, 'base64url').toString('hex') || '0'}`);

function modPow(base: bigint, exponent: bigint, modulus: bigint): bigint {
  let result = 1n;
  let b = base % modulus;
  let e = exponent;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % modulus;
    b = (b * b) % modulus;
    e >>= 1n;
  }
  return result;
}

const fixed32 = (value: bigint) => Buffer.from(value.toString(16).padStart(64, '0'), 'hex');

/**
 * ECDSA P-256 over a digest the caller already computed, as a secure element signs.
 * node:crypto only signs messages (it hashes them itself), so the nonce point comes from a
 * fresh ECDH key pair (k, kG): r is kG's x coordinate and s = k⁻¹(e + r·d) mod n is plain
 * modular arithmetic. For the soft (development) backend only: not constant-time. Not from
 * generateKeyPairSync's key exported as a JWK: on Node 20 that export holds the key's mutex
 * while it allocates, and a garbage collection finalizing the job that generated the key then
 * locks it again, a deadlock (as in core's softSigner).
 */
export function signDigestP256(privateKey: KeyObject, digest: Uint8Array): Uint8Array {
  if (digest.length !== 32) throw new TypeError(`sign a 32-byte SHA-256 digest, not ${digest.length} bytes`);
  const d = big(privateKey.export({ format: 'jwk' }).d ?? '');
  const e = BigInt(`0x${Buffer.from(digest).toString('hex')}`);
  for (;;) {
    const nonce = createECDH('prime256v1');
    nonce.generateKeys();
    const k = BigInt(`0x${nonce.getPrivateKey('hex')}`);
    // the uncompressed point 04 || x || y
    const r = BigInt(`0x${nonce.getPublicKey('hex').slice(2, 66)}`) % N;
    if (r === 0n) continue;
    const s = (modPow(k, N - 2n, N) * ((e + r * d) % N)) % N;
    if (s === 0n) continue;
    return ecdsaRawToDer(Buffer.concat([fixed32(r), fixed32(s)]));
  }
}

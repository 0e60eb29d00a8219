import { type KeyObject, verify } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier } from '@peculiar/asn1-x509';
import { encodeTlv, TAG, u8 } from './der.ts';
import { OID } from './oids.ts';
import { publicKeyObject } from './public-key.ts';

/** The signature algorithm of everything keyferry signs. */
export const ECDSA_WITH_SHA256 = new AlgorithmIdentifier({ algorithm: OID.ecdsaWithSha256 });
/** Its DER (parameters absent, RFC 5758 §3.2). */
export const ECDSA_WITH_SHA256_DER = u8(AsnConvert.serialize(ECDSA_WITH_SHA256));

const HASHES: Readonly<Record<string, { hash: string; ecdsa: boolean; name: string }>> = {
  [OID.ecdsaWithSha256]: { hash: 'sha256', ecdsa: true, name: 'ecdsa-with-SHA256' },
  [OID.ecdsaWithSha384]: { hash: 'sha384', ecdsa: true, name: 'ecdsa-with-SHA384' },
  [OID.ecdsaWithSha512]: { hash: 'sha512', ecdsa: true, name: 'ecdsa-with-SHA512' },
  [OID.sha256WithRsa]: { hash: 'sha256', ecdsa: false, name: 'sha256WithRSAEncryption' },
  [OID.sha384WithRsa]: { hash: 'sha384', ecdsa: false, name: 'sha384WithRSAEncryption' },
  [OID.sha512WithRsa]: { hash: 'sha512', ecdsa: false, name: 'sha512WithRSAEncryption' },
};

/** The readable name of a signature algorithm OID, or undefined when keyferry cannot verify it. */
export function signatureAlgorithmName(oid: string): string | undefined {
  return HASHES[oid]?.name;
}

/**
 * Verifies `signature` over `data` with the key in `spki`. ECDSA and RSA PKCS#1 v1.5 with
 * SHA-2 are supported (the vendor and factory chains keyferry meets use nothing else); an
 * unsupported algorithm, a key of the wrong type or an invalid key all give false.
 */
export function verifySignature(
  algorithmOid: string,
  spki: Uint8Array,
  data: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (HASHES[algorithmOid] === undefined) return false;
  try {
    return verifyWithKey(algorithmOid, publicKeyObject(spki), data, signature);
  } catch {
    return false;
  }
}

/** {@link verifySignature} with a key already decoded (one KeyObject per request, not two). */
export function verifyWithKey(
  algorithmOid: string,
  key: KeyObject,
  data: Uint8Array,
  signature: Uint8Array,
): boolean {
  const algorithm = HASHES[algorithmOid];
  if (algorithm === undefined) return false;
  if ((key.asymmetricKeyType === 'ec') !== algorithm.ecdsa) return false;
  if (!algorithm.ecdsa && key.asymmetricKeyType !== 'rsa') return false;
  try {
    return verify(algorithm.hash, data, algorithm.ecdsa ? { key, dsaEncoding: 'der' } : key, signature);
  } catch {
    return false;
  }
}

/**
 * SEQUENCE { signed, ecdsa-with-SHA256, BIT STRING signature }: the shape shared by a
 * certificate, a CRL and a PKCS#10 request.
 */
export function signedStructure(signedDer: Uint8Array, signature: Uint8Array): Uint8Array {
  return encodeTlv(
    TAG.SEQUENCE,
    signedDer,
    ECDSA_WITH_SHA256_DER,
    encodeTlv(TAG.BIT_STRING, ZERO, signature),
  );
}

const ZERO = Uint8Array.of(0);

import { GATEWAY_CERT_ID, GATEWAY_KEY_ID } from './port.ts';

/**
 * The PKCS#11 CKA_ID of an SE object, as aktualizr-lite and lmp-el2go-auto-register expect:
 * the gateway key 0x83000042 is id 01 and its certificate 0x83000043 id 03 (sota.toml's
 * `tls_pkey_id` / `tls_clientcert_id`); GENERIC_KEYPAIRS get 04/05, 06/07, … in their order
 * (certificate = key + 1). Any other object gets its 4-byte object id, which cannot collide
 * with those one-byte ids.
 */
export function pkcs11IdFor(objectId: number, genericKeypairs: readonly number[]): Buffer {
  if (objectId === GATEWAY_KEY_ID) return Buffer.from([0x01]);
  if (objectId === GATEWAY_CERT_ID) return Buffer.from([0x03]);
  const generic = genericKeypairs.filter((id) => id !== GATEWAY_KEY_ID);
  for (const [index, keyId] of generic.entries()) {
    const base = 0x04 + 2 * index;
    if (base + 1 > 0xff) break;
    if (objectId === keyId) return Buffer.from([base]);
    if (objectId === keyId + 1) return Buffer.from([base + 1]);
  }
  const id = Buffer.alloc(4);
  id.writeUInt32BE(objectId >>> 0);
  return id;
}

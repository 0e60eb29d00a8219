import { alternateObjectId, GATEWAY_CERT_ID, GATEWAY_KEY_ID } from './port.ts';

/** The first PKCS#11 "slot" LmP gives a generic key pair: 01 and 03 are the gateway pair's. */
const FIRST_GENERIC_SLOT = 4;
/** The last slot with two decimal digits (settings allow no more generic pairs than fit). */
const LAST_GENERIC_SLOT = 99;

/**
 * LmP's CKA_ID for a slot number: the number written as two decimal digits (`f"{slot:02d}"`)
 * and handed to its PKCS#11 tools, which read an id as hex. So slot 10 is the byte 0x10, not
 * 0x0a, and a key pair at slot 8 has ids 08/09, the next 10/11.
 */
function lmpSlotId(slot: number): Buffer {
  return Buffer.from(String(slot).padStart(2, '0'), 'hex');
}

/**
 * The PKCS#11 CKA_ID of an SE object, as aktualizr-lite and lmp-el2go-auto-register expect:
 * the gateway key 0x83000042 is id 01 and its certificate 0x83000043 id 03 (sota.toml's
 * `tls_pkey_id` / `tls_clientcert_id`); GENERIC_KEYPAIRS get 04/05, 06/07, 08/09, 10/11, … in
 * their order (certificate = key + 1, ids as LmP numbered them: {@link lmpSlotId}). Any other
 * object gets its 4-byte object id (the gateway pair's rotation slot 0x83010042/0x83010043
 * gets 06/07 while no second generic pair holds those), which cannot collide with those one-byte ids. Settings
 * allow at most MAX_GENERIC_KEYPAIRS generic pairs, so every slot has two decimal digits.
 */
export function pkcs11IdFor(objectId: number, genericKeypairs: readonly number[]): Buffer {
  if (objectId === GATEWAY_KEY_ID) return Buffer.from([0x01]);
  if (objectId === GATEWAY_CERT_ID) return Buffer.from([0x03]);
  const generic = genericKeypairs.filter((id) => id !== GATEWAY_KEY_ID);
  // The gateway pair's rotation slot takes 06/07 when no second generic pair holds them.
  if (generic.length < 2) {
    if (objectId === alternateObjectId(GATEWAY_KEY_ID)) return Buffer.from([0x06]);
    if (objectId === alternateObjectId(GATEWAY_CERT_ID)) return Buffer.from([0x07]);
  }
  for (const [index, keyId] of generic.entries()) {
    const slot = FIRST_GENERIC_SLOT + 2 * index;
    if (slot + 1 > LAST_GENERIC_SLOT) break;
    if (objectId === keyId) return lmpSlotId(slot);
    if (objectId === keyId + 1) return lmpSlotId(slot + 1);
  }
  const id = Buffer.alloc(4);
  id.writeUInt32BE(objectId >>> 0);
  return id;
}

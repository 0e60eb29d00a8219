import type { ConnectionOptions } from 'node:tls';

/** The vendor-injected objects of an SE05x (identity key 0xF0000000, certificate 0xF0000001). */
export const IDENTITY_KEY_ID = 0xf0000000;
export const IDENTITY_CERT_ID = 0xf0000001;
export const UID_OBJECT_ID = 0x7fff0206;
export const GATEWAY_KEY_ID = 0x83000042;
export const GATEWAY_CERT_ID = 0x83000043;
/**
 * Key rotation keeps two slots per pair: an object id and its alternate (bit 16 flipped, so
 * 0x83000042 ⇄ 0x83010042 and 0x83000043 ⇄ 0x83010043). The new key is made in the slot not
 * in use; the old one is deleted once the service has the report.
 */
export const ALTERNATE_SLOT_BIT = 0x00010000;

/** The object id of the other rotation slot of `objectId`. */
export function alternateObjectId(objectId: number): number {
  return (objectId ^ ALTERNATE_SLOT_BIT) >>> 0;
}

/** `SE_<8 lowercase hex>`: how aktualizr-lite and the AWS demo name secure element objects. */
export function seLabel(objectId: number): string {
  return `SE_${objectId.toString(16).padStart(8, '0')}`;
}

/** `0x83000042`, as messages show an object id. */
export function hexId(objectId: number): string {
  return `0x${objectId.toString(16).padStart(8, '0')}`;
}

/** Vendor objects no manifest may name: the identity, the UID and the rest of the 0xF… range. */
export function isReservedObjectId(objectId: number): boolean {
  return objectId >= 0xf0000000 || objectId === UID_OBJECT_ID;
}

/** The client-certificate half of node:tls options: a PEM key or an OpenSSL engine key reference. */
export type TlsKeyOptions = Pick<ConnectionOptions, 'key' | 'privateKeyEngine' | 'privateKeyIdentifier'>;

/** The vendor identity a device proves itself with on the device-link. */
export interface SeIdentity {
  /** The identity certificate first, then any intermediates the SE holds (DER). */
  readonly certificateChain: readonly Uint8Array[];
  /** The identity key for node:tls; it never leaves the SE on the pkcs11 backend. */
  readonly tls: TlsKeyOptions;
}

/** One object as {@link SecureElement.list} reports it. */
export interface SeObject {
  readonly objectId: number;
  readonly kind: 'key' | 'certificate' | 'data';
  readonly label: string;
}

/**
 * The secure element as the agent uses it (declared here, by its user). Keys are P-256 and
 * are generated inside; only their public half and signatures come out. Object ids are the
 * SE05x's 32-bit ids; each backend maps them to its own storage. Failures are AgentErrors:
 * `se_foreign_key` when an object id holds a key this agent did not generate there,
 * `se_full` when there is no room, `se_error` otherwise.
 */
export interface SecureElement {
  readonly backend: 'pkcs11' | 'soft';
  /** Where the SE is, for log lines: `token 'aktualizr' in /usr/lib/libckteec.so.0`. */
  readonly description: string;
  /** The 18-byte UID (object 0x7FFF0206). */
  uid(): Uint8Array;
  identity(): SeIdentity;
  /** The key at `objectId` for node:tls (a client certificate of that key is the caller's). */
  tlsKey(objectId: number): TlsKeyOptions;
  /** Generates a P-256 key pair at `objectId`; refuses when the id already holds a key. Returns the SPKI (DER). */
  generateKeyPair(objectId: number): Uint8Array;
  /** The SPKI (DER) of the key at `objectId`, undefined when there is none; throws `se_foreign_key` for a key not generated there. */
  publicKey(objectId: number): Uint8Array | undefined;
  /** Signs a SHA-256 digest with the key at `objectId`; returns a DER ECDSA-Sig-Value. */
  sign(objectId: number, digest: Uint8Array): Uint8Array;
  /** Stores a certificate (DER) at `objectId`, replacing the one there. */
  putCertificate(objectId: number, der: Uint8Array): void;
  getCertificate(objectId: number): Uint8Array | undefined;
  /** Removes every object at `objectId`; returns how many there were. */
  delete(objectId: number): number;
  list(): SeObject[];
  close(): void;
}

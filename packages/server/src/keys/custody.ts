import type { KeyObject } from 'node:crypto';
import type { Db } from '../storage/database.ts';
import type { CustodyKeysTable } from '../storage/tables.ts';

/** Signs SHA-256(data) with a P-256 key; the answer is a DER ECDSA-Sig-Value. */
export interface CustodySigner {
  readonly publicKeySpki: Uint8Array;
  sign(data: Uint8Array): Promise<Uint8Array>;
}

/** A key the service generated. Its private half never leaves the custody backend. */
export interface CustodyKey {
  id: string;
  backend: CustodyKeysTable['backend'];
  purpose: string;
  publicKeySpki: Uint8Array;
  /** What the backend stores in the database to find or unwrap the key again. */
  material: string;
}

/**
 * The port the domain uses for CA and TLS keys. `generate` does not write the database:
 * the caller stores the key's row in the same transaction as whatever uses it, so a failed
 * request leaves no orphan key visible. Requests run under {@link discardingKeysOnFailure}, so
 * that a backend holding keys outside the database (a PKCS#11 token) does not keep it either.
 */
export interface KeyCustody {
  readonly backend: 'soft' | 'pkcs11';
  generate(purpose: string): Promise<CustodyKey>;
  /**
   * Removes a key `generate` made whose row was never stored. The soft backend holds nothing
   * outside the row; PKCS#11 destroys the key pair on the token. Call it through
   * {@link discardUnstored}, which first makes sure no row names the key.
   */
  discard(key: CustodyKey): Promise<void>;
  signer(key: CustodyKeysTable): Promise<CustodySigner>;
  /** Start-up check that the backend can use the keys already stored. */
  verifyAccess(db: Db): Promise<void>;
  close(): Promise<void>;
}

/**
 * A custody backend that can also hand a TLS server inside this process its private key:
 * Node's TLS server needs the key itself and cannot sign through a PKCS#11 token, so only a
 * backend whose keys live in memory is one (soft). With pkcs11 custody the CA keys stay on
 * the token and a soft store beside it, under its own master key file, keeps these keys
 * (the device gateway's tls-crt key). No API ever returns the key.
 */
export interface TlsKeyStore {
  readonly backend: 'soft';
  generate(purpose: string): Promise<CustodyKey>;
  signer(key: CustodyKeysTable): Promise<CustodySigner>;
  tlsServerKey(key: CustodyKeysTable): Promise<KeyObject>;
  verifyAccess(db: Db): Promise<void>;
}

/** Purpose of a factory's device gateway TLS key; the prefix tells TLS keys from CA keys. */
export const GATEWAY_TLS_PURPOSE_PREFIX = 'gateway-tls:';

export function gatewayTlsPurpose(factoryName: string): string {
  return `${GATEWAY_TLS_PURPOSE_PREFIX}${factoryName}`;
}

/**
 * Purposes of the device-link's own keys when `deviceLink.tlsKeys: custody` keeps them in the
 * TLS key store: its service CA and its server certificate's key.
 */
export const DEVICE_LINK_KEY_PURPOSES = {
  'service-ca': 'device-link-service-ca',
  'device-link-tls': 'device-link-tls',
} as const;
export type DeviceLinkKeyPurpose = keyof typeof DEVICE_LINK_KEY_PURPOSES;

export function custodyKeyRow(key: CustodyKey, now: Date): CustodyKeysTable {
  return {
    id: key.id,
    backend: key.backend,
    purpose: key.purpose,
    public_key: Buffer.from(key.publicKeySpki).toString('base64'),
    material: key.material,
    created_at: now.toISOString(),
  };
}

export async function insertCustodyKey(db: Db, key: CustodyKey, now = new Date()): Promise<void> {
  await db.insertInto('custody_keys').values(custodyKeyRow(key, now)).execute();
}

/**
 * After a failed request: removes the key it generated from the backend, but only when the
 * database shows no row for it (a commit that failed to answer may have stored it after all).
 * When that cannot be read, or the backend refuses, the key stays: an unused key on the token
 * costs a slot, a destroyed key that a row names would cost a CA.
 */
export async function discardUnstored(db: Db, custody: KeyCustody, key: CustodyKey): Promise<void> {
  try {
    const stored = await db
      .selectFrom('custody_keys')
      .select('id')
      .where('id', '=', key.id)
      .executeTakeFirst();
    if (!stored) await custody.discard(key);
  } catch {
    // the request's own failure is the one to report
  }
}

/**
 * Runs a request that may generate keys: `run` gets a custody that remembers what it
 * generates, and when `run` fails every one of those keys is discarded
 * ({@link discardUnstored}) before the failure goes on. `db` must be outside the request's
 * transaction, so that it reads what was committed.
 */
export async function discardingKeysOnFailure<T>(
  db: Db,
  custody: KeyCustody,
  run: (custody: KeyCustody) => Promise<T>,
): Promise<T> {
  const made: CustodyKey[] = [];
  const remembering: KeyCustody = {
    backend: custody.backend,
    generate: async (purpose) => {
      const key = await custody.generate(purpose);
      made.push(key);
      return key;
    },
    discard: (key) => custody.discard(key),
    signer: (row) => custody.signer(row),
    verifyAccess: (database) => custody.verifyAccess(database),
    close: () => custody.close(),
  };
  try {
    return await run(remembering);
  } catch (error) {
    for (const key of made) await discardUnstored(db, custody, key);
    throw error;
  }
}

export async function custodySignerById(db: Db, custody: KeyCustody, id: string): Promise<CustodySigner> {
  const row = await db.selectFrom('custody_keys').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  return custody.signer(row);
}

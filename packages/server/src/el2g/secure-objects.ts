import { KeyferryError } from '@keyferry/core';
import { recordAudit } from '../audit/audit-log.ts';
import { MIN_VALIDITY_SECONDS, renewalPolicy } from '../devicelink/renewal-policy.ts';
import type { Db } from '../storage/database.ts';
import type { SecureObjectsTable, SecureObjectType } from '../storage/tables.ts';

/** Who changes something, for the audit log. */
export interface ChangeContext {
  actor: string;
  correlationId: string;
}

/** A secure object as the provisioning API shows it. */
export interface SecureObject {
  id: number;
  name: string;
  type: SecureObjectType;
  /** 8 hex digits without 0x, e.g. `83000042`. */
  objectId: string;
  caId: number | null;
  keypairId: number | null;
  /** Validity of issued certificates in days; null = the default (20 years). */
  validityDays: number | null;
  /** CERTIFICATE: validity of renewed certificates (simplereenroll) in days (default 365); KEYPAIR: null. */
  renewalValidityDays: number | null;
  /** CERTIFICATE: devices renew from this many days before expiry (default 30); KEYPAIR: null. */
  renewalWindowDays: number | null;
  /** Validity of issued certificates in seconds when set finer than days (wins over validityDays). */
  validitySeconds: number | null;
  /** CERTIFICATE: validity of renewed certificates in seconds (exact; the day field is rounded up). */
  renewalValiditySeconds: number | null;
  /** CERTIFICATE: devices renew from this many seconds before expiry (exact). */
  renewalWindowSeconds: number | null;
}

/** Finer-than-a-day validity and renewal settings of a CERTIFICATE object, in seconds. */
export interface CertificateTiming {
  validitySeconds?: number | undefined;
  renewalValiditySeconds?: number | undefined;
  renewalWindowSeconds?: number | undefined;
}

export const OBJECT_ID = /^[0-9a-f]{8}$/;

type Row = Pick<
  SecureObjectsTable,
  | 'name'
  | 'type'
  | 'object_id'
  | 'ca_id'
  | 'keypair_id'
  | 'validity_days'
  | 'renewal_validity_days'
  | 'renewal_window_days'
  | 'validity_seconds'
  | 'renewal_validity_seconds'
  | 'renewal_window_seconds'
> & {
  id: number;
};

export function toSecureObject(row: Row): SecureObject {
  const renewal =
    row.type === 'CERTIFICATE'
      ? renewalPolicy({
          renewalValidityDays: row.renewal_validity_days,
          renewalWindowDays: row.renewal_window_days,
          renewalValiditySeconds: row.renewal_validity_seconds,
          renewalWindowSeconds: row.renewal_window_seconds,
        })
      : undefined;
  return {
    id: row.id,
    name: row.name,
    type: row.type,
    objectId: row.object_id,
    caId: row.ca_id,
    keypairId: row.keypair_id,
    validityDays: row.validity_days,
    renewalValidityDays: renewal?.validityDays ?? null,
    renewalWindowDays: renewal?.windowDays ?? null,
    validitySeconds: row.validity_seconds,
    renewalValiditySeconds: renewal?.validitySeconds ?? null,
    renewalWindowSeconds: renewal?.windowSeconds ?? null,
  };
}

/** The factory's secure objects, ordered by type then name (as `el2g status` prints them). */
export async function listSecureObjects(db: Db, factoryId: number): Promise<SecureObject[]> {
  const rows = await db
    .selectFrom('secure_objects')
    .selectAll()
    .where('factory_id', '=', factoryId)
    .orderBy('type')
    .orderBy('name')
    .execute();
  return rows.map(toSecureObject);
}

export async function getSecureObject(db: Db, factoryId: number, id: number): Promise<SecureObject> {
  const row = await db
    .selectFrom('secure_objects')
    .selectAll()
    .where('factory_id', '=', factoryId)
    .where('id', '=', id)
    .executeTakeFirst();
  if (!row) throw new KeyferryError('not_found', `secure object ${id} not found in this factory`);
  return toSecureObject(row);
}

export interface NewSecureObject {
  name: string;
  type: SecureObjectType;
  objectId: string;
  caId?: number | null | undefined;
  keypairId?: number | null | undefined;
  validityDays?: number | null | undefined;
  renewalValidityDays?: number | null | undefined;
  renewalWindowDays?: number | null | undefined;
}

/**
 * Creates a secure object, or returns the existing one of the same name when it has the same
 * type and object id (so re-runs are safe). A CERTIFICATE names the CA that signs it and the
 * KEYPAIR it certifies, both of this factory. Runs inside the caller's transaction.
 */
export async function ensureSecureObject(
  db: Db,
  factoryId: number,
  spec: NewSecureObject,
  change: ChangeContext,
  now: Date,
): Promise<{ object: SecureObject; created: boolean }> {
  const objectId = spec.objectId.toLowerCase();
  if (!OBJECT_ID.test(objectId)) {
    throw new KeyferryError(
      'invalid_request',
      `object id ${spec.objectId} is not 8 hex digits (e.g. 83000042)`,
    );
  }
  const same = await db
    .selectFrom('secure_objects')
    .selectAll()
    .where('factory_id', '=', factoryId)
    .where((eb) => eb.or([eb('name', '=', spec.name), eb('object_id', '=', objectId)]))
    .execute();
  for (const row of same) {
    if (row.name !== spec.name || row.type !== spec.type || row.object_id !== objectId) {
      throw new KeyferryError(
        'conflict',
        `secure object ${row.name} (${row.type}, object id ${row.object_id}) already exists; choose another name and object id`,
      );
    }
  }
  const caId = spec.type === 'CERTIFICATE' ? (spec.caId ?? null) : null;
  const keypairId = spec.type === 'CERTIFICATE' ? (spec.keypairId ?? null) : null;
  if (spec.type === 'CERTIFICATE') await checkCertificateLinks(db, factoryId, caId, keypairId);
  const existing = same[0];
  if (existing) {
    if (existing.ca_id !== caId || existing.keypair_id !== keypairId) {
      await db
        .updateTable('secure_objects')
        .set({ ca_id: caId, keypair_id: keypairId })
        .where('id', '=', existing.id)
        .execute();
      await audit(
        db,
        factoryId,
        change,
        'secure-object.update',
        `secure-object:${existing.name}`,
        { caId, keypairId },
        now,
      );
    }
    return { object: toSecureObject({ ...existing, ca_id: caId, keypair_id: keypairId }), created: false };
  }
  const row = await db
    .insertInto('secure_objects')
    .values({
      factory_id: factoryId,
      name: spec.name,
      type: spec.type,
      object_id: objectId,
      ca_id: caId,
      keypair_id: keypairId,
      validity_days: spec.type === 'CERTIFICATE' ? (spec.validityDays ?? null) : null,
      renewal_validity_days: spec.type === 'CERTIFICATE' ? (spec.renewalValidityDays ?? null) : null,
      renewal_window_days: spec.type === 'CERTIFICATE' ? (spec.renewalWindowDays ?? null) : null,
      created_at: now.toISOString(),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  const object = toSecureObject(row);
  await audit(
    db,
    factoryId,
    change,
    'secure-object.create',
    `secure-object:${object.name}`,
    { ...object },
    now,
  );
  return { object, created: true };
}

/**
 * Sets a CERTIFICATE object's validity and renewal finer than a day (e.g. a 2-minute
 * certificate renewed 90 s before expiry). Refused, changing nothing: a KEYPAIR, a validity
 * under {@link MIN_VALIDITY_SECONDS}, or a window not shorter than the validity it applies to.
 * Runs inside the caller's transaction.
 */
export async function setCertificateTiming(
  db: Db,
  factoryId: number,
  id: number,
  timing: CertificateTiming,
  change: ChangeContext,
  now: Date,
): Promise<SecureObject> {
  const current = await getSecureObject(db, factoryId, id);
  if (current.type !== 'CERTIFICATE') {
    throw new KeyferryError(
      'invalid_request',
      `secure object ${current.name} is a KEYPAIR; validity and renewal belong to its CERTIFICATE object`,
    );
  }
  for (const [field, seconds] of Object.entries(timing)) {
    if (seconds !== undefined && field !== 'renewalWindowSeconds' && seconds < MIN_VALIDITY_SECONDS) {
      throw new KeyferryError(
        'invalid_request',
        `${field} ${seconds} is under ${MIN_VALIDITY_SECONDS} seconds; give at least ${MIN_VALIDITY_SECONDS}`,
      );
    }
  }
  const validity =
    timing.validitySeconds ?? current.validitySeconds ?? (current.validityDays ?? 20 * 365) * 86_400;
  const renewed = timing.renewalValiditySeconds ?? current.renewalValiditySeconds!;
  const window = timing.renewalWindowSeconds ?? current.renewalWindowSeconds!;
  const shortest = Math.min(validity, renewed);
  if (window >= shortest) {
    throw new KeyferryError(
      'invalid_request',
      `renewal window of ${window} seconds is not shorter than the certificate validity of ${shortest} seconds; give a shorter window or a longer validity`,
    );
  }
  const set = {
    ...(timing.validitySeconds === undefined ? {} : { validity_seconds: timing.validitySeconds }),
    ...(timing.renewalValiditySeconds === undefined
      ? {}
      : { renewal_validity_seconds: timing.renewalValiditySeconds }),
    ...(timing.renewalWindowSeconds === undefined
      ? {}
      : { renewal_window_seconds: timing.renewalWindowSeconds }),
  };
  if (Object.keys(set).length > 0) {
    await db.updateTable('secure_objects').set(set).where('id', '=', id).execute();
    await audit(
      db,
      factoryId,
      change,
      'secure-object.update',
      `secure-object:${current.name}`,
      { ...timing },
      now,
    );
  }
  return getSecureObject(db, factoryId, id);
}

async function checkCertificateLinks(
  db: Db,
  factoryId: number,
  caId: number | null,
  keypairId: number | null,
): Promise<void> {
  if (caId === null || keypairId === null) {
    throw new KeyferryError(
      'invalid_request',
      'a CERTIFICATE secure object needs caId (the intermediate CA that signs it) and keypairId (the KEYPAIR it certifies)',
    );
  }
  const ca = await db
    .selectFrom('intermediate_cas')
    .select('id')
    .where('factory_id', '=', factoryId)
    .where('id', '=', caId)
    .executeTakeFirst();
  if (!ca) throw new KeyferryError('not_found', `intermediate CA ${caId} not found in this factory`);
  const kp = await db
    .selectFrom('secure_objects')
    .select('type')
    .where('factory_id', '=', factoryId)
    .where('id', '=', keypairId)
    .executeTakeFirst();
  if (kp?.type !== 'KEYPAIR') {
    throw new KeyferryError('not_found', `KEYPAIR secure object ${keypairId} not found in this factory`);
  }
}

/**
 * Deletes a secure object that no device has been given yet; one with provisioning history or
 * issued certificates stays (its history is evidence), and so does a KEYPAIR a CERTIFICATE
 * object still names.
 */
export async function deleteSecureObject(
  db: Db,
  factoryId: number,
  id: number,
  change: ChangeContext,
  now: Date,
): Promise<void> {
  const object = await getSecureObject(db, factoryId, id);
  const used = await db
    .selectFrom('device_objects')
    .select('secure_object_id')
    .where('secure_object_id', '=', id)
    .executeTakeFirst();
  const issued = await db
    .selectFrom('certificates')
    .select('id')
    .where('secure_object_id', '=', id)
    .executeTakeFirst();
  const certifier = await db
    .selectFrom('secure_objects')
    .select('name')
    .where('keypair_id', '=', id)
    .executeTakeFirst();
  if (used || issued || certifier) {
    throw new KeyferryError(
      'conflict',
      certifier
        ? `secure object ${object.name} is the key pair of ${certifier.name}; delete that one first`
        : `secure object ${object.name} has been provisioned to devices; it cannot be deleted`,
    );
  }
  await db.deleteFrom('group_objects').where('secure_object_id', '=', id).execute();
  await db.deleteFrom('secure_objects').where('id', '=', id).execute();
  await audit(
    db,
    factoryId,
    change,
    'secure-object.delete',
    `secure-object:${object.name}`,
    { ...object },
    now,
  );
}

export async function audit(
  db: Db,
  factoryId: number,
  change: ChangeContext,
  action: string,
  object: string,
  detail: Record<string, unknown>,
  now: Date,
): Promise<void> {
  await recordAudit(
    db,
    { factoryId, actor: change.actor, action, object, detail, correlationId: change.correlationId },
    now,
  );
}

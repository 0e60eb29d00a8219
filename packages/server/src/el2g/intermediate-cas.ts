import { KeyferryError } from '@keyferry/core';
import type { Db } from '../storage/database.ts';
import type { IntermediateCasTable } from '../storage/tables.ts';
import { audit, type ChangeContext } from './secure-objects.ts';

/** The only key algorithm of EL2GO intermediates (as EdgeLock 2GO had it). */
export const CA_ALGORITHM = 'NIST_P256';

/** An intermediate CA the service holds the key of. The key itself is never shown. */
export interface IntermediateCa {
  id: number;
  name: string;
  algorithm: string;
  /** The CA certificate, PEM. */
  certificate: string;
  createdAt: string;
  updatedAt: string;
}

function toIntermediateCa(row: Omit<IntermediateCasTable, 'id'> & { id: number }): IntermediateCa {
  return {
    id: row.id,
    name: row.name,
    algorithm: row.algorithm,
    certificate: row.certificate,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

export async function listIntermediateCas(db: Db, factoryId: number): Promise<IntermediateCa[]> {
  const rows = await db
    .selectFrom('intermediate_cas')
    .selectAll()
    .where('factory_id', '=', factoryId)
    .orderBy('id')
    .execute();
  return rows.map(toIntermediateCa);
}

export async function getIntermediateCa(db: Db, factoryId: number, id: number): Promise<IntermediateCa> {
  const row = await db
    .selectFrom('intermediate_cas')
    .selectAll()
    .where('factory_id', '=', factoryId)
    .where('id', '=', id)
    .executeTakeFirst();
  if (!row) throw new KeyferryError('not_found', `intermediate CA ${id} not found in this factory`);
  return toIntermediateCa(row);
}

/**
 * Creates the named CA or points it at a new key and certificate. Certificates the old key
 * issued stay valid wherever their CA is still trusted (the factory's ca-crt keeps the old
 * entry); the service signs with the new key from now on. Runs in the caller's transaction.
 */
export async function upsertIntermediateCa(
  db: Db,
  factoryId: number,
  spec: { name: string; keyRef: string; certificatePem: string },
  change: ChangeContext,
  now: Date,
): Promise<{ ca: IntermediateCa; created: boolean }> {
  const at = now.toISOString();
  const existing = await db
    .selectFrom('intermediate_cas')
    .select('id')
    .where('factory_id', '=', factoryId)
    .where('name', '=', spec.name)
    .executeTakeFirst();
  let id: number;
  if (existing) {
    id = existing.id;
    await db
      .updateTable('intermediate_cas')
      .set({ key_ref: spec.keyRef, certificate: spec.certificatePem, updated_at: at })
      .where('id', '=', id)
      .execute();
  } else {
    const row = await db
      .insertInto('intermediate_cas')
      .values({
        factory_id: factoryId,
        name: spec.name,
        algorithm: CA_ALGORITHM,
        key_ref: spec.keyRef,
        certificate: spec.certificatePem,
        created_at: at,
        updated_at: at,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    id = row.id;
  }
  await audit(
    db,
    factoryId,
    change,
    existing ? 'intermediate-ca.update' : 'intermediate-ca.create',
    `intermediate-ca:${spec.name}`,
    { id, keyRef: spec.keyRef },
    now,
  );
  return { ca: await getIntermediateCa(db, factoryId, id), created: !existing };
}

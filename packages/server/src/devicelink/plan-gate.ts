import { KeyferryError } from '@keyferry/core';
import { sql } from 'kysely';
import { evaluationEnd, noPlanRow } from '../allowlist/plan.ts';
import { compiledOnce } from '../storage/compiled-query.ts';
import type { Db } from '../storage/database.ts';
import type { FactoryEl2gTable } from '../storage/tables.ts';
import type { AssignedObject } from './device-records.ts';
import type { CaVersion } from './issuing-cas.ts';

const ISSUED = new Set(['GENERATION_COMPLETED', 'PROVISIONING_COMPLETED', 'PROVISIONING_FAILED']);

/** True once a certificate was issued for the object (the device may report on it). */
export function isIssued(object: Pick<AssignedObject, 'state'>): boolean {
  return ISSUED.has(object.state);
}

const planAndCa = compiledOnce((db, [factoryId, caId]: [number, number | null]) =>
  db
    .selectFrom('factory_el2g')
    .leftJoin('intermediate_cas', (join) =>
      join
        .onRef('intermediate_cas.factory_id', '=', 'factory_el2g.factory_id')
        .on('intermediate_cas.id', '=', caId),
    )
    .leftJoin('factory_pki', 'factory_pki.factory_id', 'factory_el2g.factory_id')
    .selectAll('factory_el2g')
    .select([
      'intermediate_cas.id as ca_id',
      'intermediate_cas.key_ref as ca_key_ref',
      'intermediate_cas.updated_at as ca_updated_at',
      sql<number | null>`length(factory_pki.root_crt)`.as('ca_root_length'),
    ])
    .where('factory_el2g.factory_id', '=', factoryId),
);

/**
 * What an enrollment reads before its transaction, in one statement: the factory's plan and
 * the current version of the CA `caId` (absent when it is null or the CA is gone).
 */
export async function enrollmentPlanAndCa(
  db: Db,
  factoryId: number,
  caId: number | null,
): Promise<{ plan: FactoryEl2gTable; ca: CaVersion | undefined }> {
  const row = (await planAndCa(db, factoryId, caId)).rows[0];
  if (!row) throw noPlanRow(factoryId);
  const { ca_id, ca_key_ref, ca_updated_at, ca_root_length, ...plan } = row;
  const ca =
    ca_id === null || ca_key_ref === null || ca_updated_at === null
      ? undefined
      : { id: ca_id, key_ref: ca_key_ref, updated_at: ca_updated_at, root_length: ca_root_length };
  return { plan, ca };
}

/**
 * What the plan (docs/api.md, plan limits) allows a device at enrollment: an evaluation plan stops at its
 * end; a device holds at most max_certificates certificates and max_keypairs key pairs.
 * The yearly device quota is spent when a device is allow-listed (allowlist/plan.ts).
 */
export function assertPlanAllowsEnrollment(
  plan: FactoryEl2gTable,
  objects: readonly AssignedObject[],
  target: AssignedObject,
  now: Date,
): void {
  if (plan.plan === 'evaluation') {
    const end = evaluationEnd(plan);
    if (now >= end) {
      throw new KeyferryError(
        'evaluation_expired',
        `the factory's evaluation period ended ${end.toISOString()}; no certificates are issued until it is on a commercial plan`,
        { detail: { limit: 'evaluation-days', max: plan.evaluation_days, endedAt: end.toISOString() } },
      );
    }
  }
  const others = objects.filter((o) => o.type === 'CERTIFICATE' && o.id !== target.id && isIssued(o));
  if (others.length >= plan.max_certificates) {
    throw new KeyferryError(
      'object_quota_exceeded',
      `the plan allows ${plan.max_certificates} certificate(s) per device and this device has ${others.length}`,
      { detail: { limit: 'certificates-per-device', usage: others.length, max: plan.max_certificates } },
    );
  }
  const keypairs = new Set(others.map((o) => o.keypairId));
  if (target.keypairId !== null && !keypairs.has(target.keypairId) && keypairs.size >= plan.max_keypairs) {
    throw new KeyferryError(
      'object_quota_exceeded',
      `the plan allows ${plan.max_keypairs} key pair(s) per device and this device has ${keypairs.size}`,
      { detail: { limit: 'keypairs-per-device', usage: keypairs.size, max: plan.max_keypairs } },
    );
  }
}

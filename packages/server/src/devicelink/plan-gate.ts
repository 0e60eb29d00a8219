import { KeyferryError } from '@keyferry/core';
import { sql } from 'kysely';
import { evaluationEnd } from '../allowlist/plan.ts';
import { type AssignedObject, assignedObject, deviceLinkObjectsQuery } from '../el2g/assigned-objects.ts';
import { compiledOnce } from '../storage/compiled-query.ts';
import type { Db } from '../storage/database.ts';
import type { FactoryEl2gTable } from '../storage/tables.ts';
import type { CaVersion } from './issuing-cas.ts';

const ISSUED = new Set(['GENERATION_COMPLETED', 'PROVISIONING_COMPLETED', 'PROVISIONING_FAILED']);

/** True once a certificate was issued for the object (the device may report on it). */
export function isIssued(object: Pick<AssignedObject, 'state'>): boolean {
  return ISSUED.has(object.state);
}

/** Every column of a factory's plan row, each read as `plan_<column>` with the objects. */
const PLAN_COLUMNS = [
  'factory_id',
  'plan',
  'enabled_at',
  'subscription_start',
  'max_devices',
  'max_keypairs',
  'max_certificates',
  'evaluation_days',
] as const satisfies readonly (keyof FactoryEl2gTable)[];
// a column added to the plan's table and not listed above fails the type check here
const planColumnsComplete: Exclude<keyof FactoryEl2gTable, (typeof PLAN_COLUMNS)[number]> extends never
  ? true
  : never = true;
void planColumnsComplete;

const objectsPlanAndCas = compiledOnce((db, [deviceRowId, groupId, factoryId]: [number, number, number]) =>
  deviceLinkObjectsQuery(db, deviceRowId, groupId)
    .leftJoin('factory_el2g', (join) => join.on('factory_el2g.factory_id', '=', factoryId))
    .leftJoin('intermediate_cas', (join) =>
      join
        .onRef('intermediate_cas.id', '=', 'secure_objects.ca_id')
        .on('intermediate_cas.factory_id', '=', factoryId),
    )
    .leftJoin('factory_pki', (join) => join.on('factory_pki.factory_id', '=', factoryId))
    .select(PLAN_COLUMNS.map((c) => `factory_el2g.${c} as plan_${c}` as const))
    .select([
      'intermediate_cas.id as ca_version_id',
      'intermediate_cas.key_ref as ca_key_ref',
      'intermediate_cas.updated_at as ca_updated_at',
      sql<number | null>`length(factory_pki.root_crt)`.as('ca_root_length'),
    ]),
);

export interface EnrollmentFacts {
  /** The device's objects in the device-link's order (KEYPAIRs first), with their states. */
  objects: AssignedObject[];
  /** The factory's plan; absent only when its row is missing. */
  plan: FactoryEl2gTable | undefined;
  /** The current version of an object's issuing CA (absent for none, or a CA gone). */
  caVersion(object: AssignedObject): CaVersion | undefined;
}

/**
 * What an enrollment reads before it decides, in one statement: the device's objects with
 * their states, the factory's plan, and the current version of each object's CA.
 */
export async function enrollmentFacts(
  db: Db,
  device: { rowId: number; groupId: number },
  factoryId: number,
): Promise<EnrollmentFacts> {
  const { rows } = await objectsPlanAndCas(db, device.rowId, device.groupId, factoryId);
  const first = rows[0];
  const plan =
    first && first.plan_factory_id !== null
      ? (Object.fromEntries(PLAN_COLUMNS.map((c) => [c, first[`plan_${c}`]])) as unknown as FactoryEl2gTable)
      : undefined;
  const versions = new Map<number, CaVersion>();
  for (const r of rows) {
    if (r.ca_version_id === null || r.ca_key_ref === null || r.ca_updated_at === null) continue;
    versions.set(r.id, {
      id: r.ca_version_id,
      key_ref: r.ca_key_ref,
      updated_at: r.ca_updated_at,
      root_length: r.ca_root_length,
    });
  }
  return { objects: rows.map(assignedObject), plan, caVersion: (object) => versions.get(object.id) };
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

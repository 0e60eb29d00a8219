import { KeyferryError } from '@keyferry/core';
import { evaluationEnd, loadPlanRow } from '../allowlist/plan.ts';
import type { Db } from '../storage/database.ts';
import type { AssignedObject } from './device-records.ts';

const ISSUED = new Set(['GENERATION_COMPLETED', 'PROVISIONING_COMPLETED', 'PROVISIONING_FAILED']);

/** True once a certificate was issued for the object (the device may report on it). */
export function isIssued(object: Pick<AssignedObject, 'state'>): boolean {
  return ISSUED.has(object.state);
}

/**
 * What the plan (docs/api.md, plan limits) allows a device at enrollment: an evaluation plan stops at its
 * end; a device holds at most max_certificates certificates and max_keypairs key pairs.
 * The yearly device quota is spent when a device is allow-listed (allowlist/plan.ts).
 */
export async function assertPlanAllowsEnrollment(
  db: Db,
  factoryId: number,
  objects: readonly AssignedObject[],
  target: AssignedObject,
  now: Date,
): Promise<void> {
  const plan = await loadPlanRow(db, factoryId);
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

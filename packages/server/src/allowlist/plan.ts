import { KeyferryError } from '@keyferry/core';
import { compiledOnce } from '../storage/compiled-query.ts';
import type { Db } from '../storage/database.ts';
import type { FactoryEl2gTable } from '../storage/tables.ts';

const DAY_MS = 86_400_000;

/**
 * A factory's plan (docs/api.md, plan limits) and how much of it is used. The device quota counts every
 * allow-list addition whose `added_at` falls in the current subscription year, including
 * devices deleted since (their slot was used) and counting a re-added device again.
 */
export interface PlanUsage {
  kind: 'evaluation' | 'commercial';
  enabledAt: string;
  /** Evaluation only: when adding devices stops (`enabledAt` + `evaluationDays`). */
  evaluationEndsAt: string | null;
  evaluationDays: number;
  evaluationExpired: boolean;
  subscriptionYear: { start: string; end: string };
  devices: { used: number; max: number };
  maxKeypairsPerDevice: number;
  maxCertificatesPerDevice: number;
}

const planRow = compiledOnce((db, [factoryId]: [number]) =>
  db.selectFrom('factory_el2g').selectAll().where('factory_id', '=', factoryId),
);
const planRowForUpdate = compiledOnce((db, [factoryId]: [number]) =>
  db.selectFrom('factory_el2g').selectAll().where('factory_id', '=', factoryId).forUpdate(),
);

export async function loadPlanRow(db: Db, factoryId: number, forUpdate = false): Promise<FactoryEl2gTable> {
  const row = (await (forUpdate ? planRowForUpdate : planRow)(db, factoryId)).rows[0];
  if (!row) throw noPlanRow(factoryId);
  return row;
}

/** A factory without its plan row (factory_el2g): the store is not as keyferryd left it. */
export function noPlanRow(factoryId: number): KeyferryError {
  return new KeyferryError('internal', `factory ${factoryId} has no EdgeLock 2GO plan row`);
}

/** The subscription year containing `now`: whole years counted from `subscription_start`. */
export function subscriptionYear(start: string, now: Date): { start: Date; end: Date } {
  const first = new Date(start);
  const addYears = (n: number) => {
    const d = new Date(first);
    d.setUTCFullYear(first.getUTCFullYear() + n);
    return d;
  };
  let years = Math.max(0, now.getUTCFullYear() - first.getUTCFullYear());
  while (years > 0 && addYears(years) > now) years--;
  return { start: addYears(years), end: addYears(years + 1) };
}

export function evaluationEnd(plan: FactoryEl2gTable): Date {
  return new Date(new Date(plan.enabled_at).getTime() + plan.evaluation_days * DAY_MS);
}

/** Devices added to the allow-list since `since` (deleted ones included). */
export async function countDevicesAddedSince(db: Db, factoryId: number, since: Date): Promise<number> {
  const row = await db
    .selectFrom('devices')
    .select((eb) => eb.fn.countAll().as('n'))
    .where('factory_id', '=', factoryId)
    .where('added_at', '>=', since.toISOString())
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

export function describePlan(plan: FactoryEl2gTable, used: number, now: Date): PlanUsage {
  const year = subscriptionYear(plan.subscription_start, now);
  const evaluation = plan.plan === 'evaluation';
  const end = evaluationEnd(plan);
  return {
    kind: plan.plan,
    enabledAt: plan.enabled_at,
    evaluationEndsAt: evaluation ? end.toISOString() : null,
    evaluationDays: plan.evaluation_days,
    evaluationExpired: evaluation && now >= end,
    subscriptionYear: { start: year.start.toISOString(), end: year.end.toISOString() },
    devices: { used, max: plan.max_devices },
    maxKeypairsPerDevice: plan.max_keypairs,
    maxCertificatesPerDevice: plan.max_certificates,
  };
}

/** The plan and its usage, for `el2g status` and the overview. */
export async function planUsage(db: Db, factoryId: number, now = new Date()): Promise<PlanUsage> {
  const plan = await loadPlanRow(db, factoryId);
  const year = subscriptionYear(plan.subscription_start, now);
  return describePlan(plan, await countDevicesAddedSince(db, factoryId, year.start), now);
}

/**
 * Refuses with `evaluation_expired` once an evaluation plan's period is over. Used by the
 * allow-list (adding devices) and, later, the device-link (enrolling).
 */
export function assertEvaluationActive(plan: FactoryEl2gTable, now: Date): void {
  if (plan.plan !== 'evaluation') return;
  const end = evaluationEnd(plan);
  if (now < end) return;
  const daysUsed = Math.floor((now.getTime() - new Date(plan.enabled_at).getTime()) / DAY_MS);
  throw new KeyferryError(
    'evaluation_expired',
    `evaluation period over: limit evaluation-days, ${daysUsed} days used of ${plan.evaluation_days} ` +
      `(ended ${end.toISOString()}); no devices can be added until the factory is on a commercial plan`,
    {
      detail: {
        limit: 'evaluation-days',
        usage: daysUsed,
        max: plan.evaluation_days,
        endedAt: end.toISOString(),
      },
    },
  );
}

/** The per-device refusal for a device past the yearly quota. */
export function deviceQuotaRefusal(
  usage: number,
  max: number,
  year: { start: Date; end: Date },
): { code: 'device_quota_exceeded'; reason: string; limit: string; usage: number; max: number } {
  return {
    code: 'device_quota_exceeded',
    reason:
      `device quota reached: limit devices-per-year, ${usage} of ${max} devices used in the subscription ` +
      `year ${year.start.toISOString().slice(0, 10)} to ${year.end.toISOString().slice(0, 10)}`,
    limit: 'devices-per-year',
    usage,
    max,
  };
}

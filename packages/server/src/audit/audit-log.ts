import { setImmediate as nextTurn } from 'node:timers/promises';
import { type Selectable, sql } from 'kysely';
import { compiledOnce } from '../storage/compiled-query.ts';
import type { Db } from '../storage/database.ts';
import type { AuditLogTable } from '../storage/tables.ts';

export interface AuditEntry {
  factoryId: number | null;
  /** `token:<id>`, `device:<decimal id>`, or `system`. */
  actor: string;
  action: string;
  object: string;
  detail?: Record<string, unknown>;
  correlationId: string;
}

export interface AuditRecord extends Required<AuditEntry> {
  id: number;
  at: string;
  /** How many times it happened: above 1 only for counted refusals (recordCountedAudit). */
  count: number;
}

/** Appends to the audit log; callers pass their transaction so the entry commits with the change. */
export async function recordAudit(db: Db, entry: AuditEntry, now = new Date()): Promise<void> {
  const r = auditRow(entry, now.toISOString());
  await insertAudit(db, r.at, r.factory_id, r.actor, r.action, r.object, r.detail, r.correlation_id);
}

const insertAudit = compiledOnce(
  (
    db,
    [at, factoryId, actor, action, object, detail, correlationId]: [
      string,
      number | null,
      string,
      string,
      string,
      string,
      string,
    ],
  ) =>
    db.insertInto('audit_log').values({
      at,
      factory_id: factoryId,
      actor,
      action,
      object,
      detail,
      correlation_id: correlationId,
    }),
);

/** The row of one entry, as every writer of the audit log inserts it. */
export function auditRow(entry: AuditEntry, at: string) {
  return {
    at,
    factory_id: entry.factoryId,
    actor: entry.actor,
    action: entry.action,
    object: entry.object,
    detail: JSON.stringify(entry.detail ?? {}),
    correlation_id: entry.correlationId,
  };
}

/**
 * Appends an entry that repeats (a refusal): entries of the same `key` (who, why, what)
 * within one UTC minute share one row, whose `count` grows. The row keeps the first
 * occurrence's time, detail and correlation id; one client refused 2,000 times a minute adds
 * one row, not 2,000. One upsert, atomic on both backends.
 */
export async function recordCountedAudit(
  db: Db,
  entry: AuditEntry,
  key: string,
  now = new Date(),
): Promise<void> {
  const at = now.toISOString();
  await db
    .insertInto('audit_log')
    .values({ ...auditRow(entry, at), aggregate_key: `${at.slice(0, 16)} ${key}` })
    .onConflict((oc) =>
      oc
        .column('aggregate_key')
        // the conflict target names the partial unique index (migration 014)
        .where('aggregate_key', 'is not', null)
        .doUpdateSet({ count: sql<number>`${sql.ref('audit_log.count')} + 1` }),
    )
    .execute();
}

/**
 * Entries a correlation-id lookup reads per statement. Correlation ids have no index (every
 * audit row written would pay for it, the device-link's three per device among them), so the
 * lookup reads the factory's log newest first in slices of this many ids, with a turn of the
 * event loop between them: on SQLite a single statement over a million entries held the event
 * loop, and with it the device-link, for ~0.3 s.
 */
export const CORRELATION_SCAN_IDS = 5000;

/** Newest first, keyset-paged by id so pages stay stable while entries are appended. */
export async function listAudit(
  db: Db,
  factoryId: number,
  options: { before?: number; limit: number; correlationId?: string },
  sliceIds = CORRELATION_SCAN_IDS,
): Promise<AuditRecord[]> {
  const page = (below: number | undefined, from: number | undefined, limit: number) => {
    let query = db.selectFrom('audit_log').selectAll().where('factory_id', '=', factoryId);
    if (below !== undefined) query = query.where('id', '<', below);
    if (from !== undefined) query = query.where('id', '>=', from);
    if (options.correlationId !== undefined)
      query = query.where('correlation_id', '=', options.correlationId);
    return query.orderBy('id', 'desc').limit(limit).execute();
  };
  if (options.correlationId === undefined) {
    return (await page(options.before, undefined, options.limit)).map(toAuditRecord);
  }
  const ids = await db
    .selectFrom('audit_log')
    .select((eb) => [eb.fn.min('id').as('first'), eb.fn.max('id').as('last')])
    .executeTakeFirstOrThrow();
  if (ids.first === null || ids.last === null) return [];
  const first = Number(ids.first);
  const rows: Selectable<AuditLogTable>[] = [];
  let below = Math.min(options.before ?? Number.POSITIVE_INFINITY, Number(ids.last) + 1);
  for (let slice = 0; rows.length < options.limit && below > first; slice++) {
    if (slice > 0) await nextTurn();
    rows.push(...(await page(below, below - sliceIds, options.limit - rows.length)));
    below -= sliceIds;
  }
  return rows.map(toAuditRecord);
}

function toAuditRecord(r: Selectable<AuditLogTable>): AuditRecord {
  return {
    id: r.id,
    at: r.at,
    factoryId: r.factory_id,
    actor: r.actor,
    action: r.action,
    object: r.object,
    detail: JSON.parse(r.detail) as Record<string, unknown>,
    correlationId: r.correlation_id,
    count: r.count,
  };
}

/** Appends many entries in few statements (bulk allow-list changes); same rows as recordAudit. */
export async function recordAuditBatch(
  db: Db,
  entries: readonly AuditEntry[],
  now = new Date(),
): Promise<void> {
  const at = now.toISOString();
  // 7 bound values a row; 500 rows stay far below SQLite's and PostgreSQL's parameter limits
  for (let i = 0; i < entries.length; i += 500) {
    // a turn for other requests between statements (SQLite runs each one synchronously)
    if (i > 0) await nextTurn();
    await db
      .insertInto('audit_log')
      .values(entries.slice(i, i + 500).map((e) => auditRow(e, at)))
      .execute();
  }
}

/** Steps a device timeline shows. */
export const DEVICE_TIMELINE_STEPS = 200;

/**
 * The device an entry is about: its actor when that is a device (the device-link's entries),
 * else its object (what was done to the device). The same expression as the index
 * `audit_log_device` (migration 015), which serves a query only while the two are identical.
 */
const ABOUT_DEVICE = sql<string>`CASE WHEN substr(actor, 1, 7) = 'device:' THEN actor ELSE object END`;

/** The query of deviceTimeline: an index range of `audit_log_device`, read newest first. */
export function deviceTimelineQuery(db: Db, factoryId: number, decimalId: string, limit: number) {
  return db
    .selectFrom('audit_log')
    .selectAll()
    .where('factory_id', '=', factoryId)
    .where(ABOUT_DEVICE, '=', `device:${decimalId}`)
    .orderBy('id', 'desc')
    .limit(limit);
}

/**
 * A device's history, newest first: what was done to it (`object` = the device: allow-list
 * changes, reports) and what it did (`actor` = the device: manifest, enrollments, refusals).
 * Only the device's own entries are read, however long the factory's audit log.
 */
export async function deviceTimeline(
  db: Db,
  factoryId: number,
  decimalId: string,
  limit = DEVICE_TIMELINE_STEPS,
): Promise<AuditRecord[]> {
  const rows = await deviceTimelineQuery(db, factoryId, decimalId, limit).execute();
  return rows.map(toAuditRecord);
}

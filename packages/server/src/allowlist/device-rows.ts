import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Db } from '../storage/database.ts';
import { chunks, type ParsedRequestId } from './device-results.ts';

/**
 * Rows a statement inserts or ids an IN list holds (far below both dialects' parameter limits).
 * Between statements the event loop gets a turn: a 10,000-id request would otherwise be one
 * synchronous SQLite span of a quarter second that every other request waits behind.
 */
export const STATEMENT_ROWS = 500;

export interface ActiveRow {
  row: number;
  deviceId: string;
  groupId: number;
  group: string;
}

/** Active (not deleted) allow-list rows of these ids, keyed by canonical decimal id. */
export async function activeRows(
  db: Db,
  factoryId: number,
  ids: readonly ParsedRequestId[],
): Promise<Map<string, ActiveRow>> {
  const found = new Map<string, ActiveRow>();
  const unique = [...new Set(ids.map((p) => p.id.decimal))];
  for (const [n, part] of chunks(unique, STATEMENT_ROWS).entries()) {
    if (n > 0) await nextTurn();
    const rows = await db
      .selectFrom('devices')
      .innerJoin('device_groups', 'device_groups.id', 'devices.group_id')
      .select(['devices.id as row', 'devices.device_id', 'devices.group_id', 'device_groups.name'])
      .where('devices.factory_id', '=', factoryId)
      .where('devices.deleted_at', 'is', null)
      .where('devices.device_id', 'in', part)
      .execute();
    for (const r of rows)
      found.set(r.device_id, { row: r.row, deviceId: r.device_id, groupId: r.group_id, group: r.name });
  }
  return found;
}

/** Inserts; a row another transaction inserted first is skipped (ON CONFLICT DO NOTHING). */
export async function insertDevices(
  db: Db,
  factoryId: number,
  groupId: number,
  nc12: string,
  fresh: readonly ParsedRequestId[],
  now: Date,
): Promise<Set<string>> {
  const inserted = new Set<string>();
  const at = now.toISOString();
  for (const [n, part] of chunks(fresh, STATEMENT_ROWS).entries()) {
    if (n > 0) await nextTurn();
    const rows = await db
      .insertInto('devices')
      .values(
        part.map((p) => ({
          factory_id: factoryId,
          device_id: p.id.decimal,
          group_id: groupId,
          nc12,
          added_at: at,
          deleted_at: null,
          last_connection: null,
        })),
      )
      .onConflict((oc) => oc.doNothing())
      .returning('device_id')
      .execute();
    for (const r of rows) inserted.add(r.device_id);
  }
  return inserted;
}

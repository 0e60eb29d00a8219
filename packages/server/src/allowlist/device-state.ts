import { sql } from 'kysely';
import { compiledOnce } from '../storage/compiled-query.ts';
import type { Db } from '../storage/database.ts';
import type { ProvisioningState } from '../storage/tables.ts';

/**
 * A device's provisioning state as one value: the least advanced of its objects' states, a
 * failure winning over everything. A device with no device_objects row has not connected yet
 * (GENERATION_ON_CONNECTION). `devices.state_rank` holds the index into this list, kept up to
 * date by {@link refreshDeviceState} whenever an object's state changes.
 */
export const DEVICE_STATES = [
  'GENERATION_FAILED',
  'PROVISIONING_FAILED',
  'GENERATION_ON_CONNECTION',
  'GENERATION_TRIGGERED',
  'GENERATION_COMPLETED',
  'PROVISIONING_COMPLETED',
] as const satisfies readonly ProvisioningState[];
export type DeviceState = (typeof DEVICE_STATES)[number];
export const NOT_CONNECTED_RANK = DEVICE_STATES.indexOf('GENERATION_ON_CONNECTION');

export function stateRank(state: DeviceState): number {
  return DEVICE_STATES.indexOf(state);
}

/** The rank of a state column (`<table>.state`): its index into DEVICE_STATES. */
function rankOf(table: string) {
  const cases = DEVICE_STATES.map((s, i) => sql`WHEN ${sql.lit(s)} THEN ${sql.lit(i)}`);
  return sql`CASE ${sql.ref(`${table}.state`)} ${sql.join(cases, sql` `)} END`;
}

/** The rank of devices.id's state computed from its device_objects rows. */
function computedRank() {
  return sql<number>`COALESCE((SELECT MIN(${rankOf('device_objects')}) FROM device_objects WHERE device_objects.device_row_id = devices.id), ${sql.lit(NOT_CONNECTED_RANK)})`;
}

/**
 * PostgreSQL only: devices.id's rank in a statement that also upserts some of its
 * device_objects rows from its CTE `v` (secure_object_id, state: the new values). A statement
 * does not see its own CTE's writes, so the rows being written are counted with their values
 * from `v` and the others with their stored states; the rank does not depend on the upsert,
 * which may then be gated on this update (device-records.ts, writeAndAudit).
 */
export function rankAfterWrite() {
  return sql<number>`COALESCE((SELECT MIN(${rankOf('s')}) FROM (
    SELECT device_objects.state FROM device_objects WHERE device_objects.device_row_id = devices.id
      AND device_objects.secure_object_id NOT IN (SELECT v.secure_object_id FROM v)
    UNION ALL SELECT v.state FROM v) AS s), ${sql.lit(NOT_CONNECTED_RANK)})`;
}

/**
 * Recomputes one device's state after one of its objects changed (same transaction). With
 * `touch`, the same statement records the device's connection (`last_connection`) and the
 * answer is false when its row was deleted meanwhile; otherwise it is true.
 */
export async function refreshDeviceState(
  db: Db,
  deviceRowId: number,
  now: Date,
  options: { touch?: boolean } = {},
): Promise<boolean> {
  const at = now.toISOString();
  if (!options.touch) {
    await refreshRank(db, at, deviceRowId);
    return true;
  }
  const result = await refreshRankAndTouch(db, at, deviceRowId);
  return Number(result.numAffectedRows) === 1;
}

const refreshRank = compiledOnce((db, [at, deviceRowId]: [string, number]) =>
  db.updateTable('devices').set({ state_rank: computedRank(), state_at: at }).where('id', '=', deviceRowId),
);

const refreshRankAndTouch = compiledOnce((db, [at, deviceRowId]: [string, number]) =>
  db
    .updateTable('devices')
    .set({ state_rank: computedRank(), state_at: at, last_connection: at })
    .where('id', '=', deviceRowId)
    .where('deleted_at', 'is', null),
);

/**
 * Recomputes every device of a factory from its rows, for code that writes device_objects in
 * bulk (the console benchmark seeds 50,000 devices' states that way).
 */
export async function recomputeDeviceStates(db: Db, factoryId: number): Promise<void> {
  await db
    .updateTable('devices')
    .set({
      state_rank: computedRank(),
      state_at: sql<
        string | null
      >`(SELECT MAX(device_objects.updated_at) FROM device_objects WHERE device_objects.device_row_id = devices.id)`,
    })
    .where('factory_id', '=', factoryId)
    .execute();
}

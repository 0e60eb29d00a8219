import { DEVICE_ID_FORMS, KeyferryError, tryParseDeviceId } from '@keyferry/core';
import { type SqlBool, sql } from 'kysely';
import type { Db } from '../storage/database.ts';
import type { ProvisioningState } from '../storage/tables.ts';

/**
 * A device's provisioning state as one value: the least advanced of its objects' states, a
 * failure winning over everything. A device with no device_objects row has not connected yet
 * (GENERATION_ON_CONNECTION). The order below is that ranking; SQL computes it as the minimum
 * rank over the device's rows so that counting and filtering 50,000 devices stays in the database.
 */
export const DEVICE_STATES = [
  'GENERATION_FAILED',
  'PROVISIONING_FAILED',
  'GENERATION_ON_CONNECTION',
  'GENERATION_TRIGGERED',
  'GENERATION_COMPLETED',
  'PROVISIONING_COMPLETED',
] as const satisfies readonly ProvisioningState[];
const NOT_CONNECTED_RANK = DEVICE_STATES.indexOf('GENERATION_ON_CONNECTION');
const FAILED_STATES: ProvisioningState[] = ['GENERATION_FAILED', 'PROVISIONING_FAILED'];

/** Devices a console page shows at once. */
export const DEVICE_SEARCH_PAGE = 50;
/** Failures the overview lists. */
export const LATEST_FAILURES = 10;
/** Minutes the provisioning-rate chart covers. */
export const RATE_WINDOW_MINUTES = 30;

function rankOf() {
  const cases = DEVICE_STATES.map((s, i) => sql`WHEN ${s} THEN ${sql.lit(i)}`);
  return sql<number>`CASE device_objects.state ${sql.join(cases, sql` `)} END`;
}

/** The rank of `devices.id`'s state, computed by a lookup on device_objects' primary key. */
function deviceRank() {
  return sql<number>`COALESCE((SELECT MIN(${rankOf()}) FROM device_objects WHERE device_objects.device_row_id = devices.id), ${sql.lit(NOT_CONNECTED_RANK)})`;
}

export type DeviceState = (typeof DEVICE_STATES)[number];

/** Active devices of a factory counted by {@link DEVICE_STATES}; every state is present. */
export async function devicesByState(db: Db, factoryId: number): Promise<Record<DeviceState, number>> {
  const rows = await db
    .selectFrom('devices')
    .select([deviceRank().as('rank'), (eb) => eb.fn.countAll<number>().as('n')])
    .where('devices.factory_id', '=', factoryId)
    .where('devices.deleted_at', 'is', null)
    .groupBy('rank')
    .execute();
  const counts = Object.fromEntries(DEVICE_STATES.map((s) => [s, 0])) as Record<DeviceState, number>;
  for (const r of rows) counts[DEVICE_STATES[Number(r.rank)]!] += Number(r.n);
  return counts;
}

export interface ObjectFailure {
  deviceId: string;
  object: string;
  state: ProvisioningState;
  reason: string | null;
  at: string;
}

/** The newest failed objects of active devices, with the reason the device or service gave. */
export async function latestFailures(
  db: Db,
  factoryId: number,
  limit = LATEST_FAILURES,
): Promise<ObjectFailure[]> {
  const rows = await db
    .selectFrom('device_objects')
    .innerJoin('devices', 'devices.id', 'device_objects.device_row_id')
    .innerJoin('secure_objects', 'secure_objects.id', 'device_objects.secure_object_id')
    .select([
      'devices.device_id',
      'secure_objects.name',
      'device_objects.state',
      'device_objects.reason',
      'device_objects.updated_at',
    ])
    .where('devices.factory_id', '=', factoryId)
    .where('devices.deleted_at', 'is', null)
    .where('device_objects.state', 'in', FAILED_STATES)
    .orderBy('device_objects.updated_at', 'desc')
    .limit(limit)
    .execute();
  return rows.map((r) => ({
    deviceId: r.device_id,
    object: r.name,
    state: r.state,
    reason: r.reason,
    at: r.updated_at,
  }));
}

/**
 * Devices that finished provisioning, per minute (oldest first): a device counts in the minute
 * of its last object's PROVISIONING_COMPLETED, once all its objects are there (a device whose
 * key pair succeeded but whose certificate failed is not provisioned).
 */
export interface RateSeries {
  /** ISO minute (`YYYY-MM-DDTHH:MM`) of the first bucket. */
  from: string;
  perMinute: number[];
}

export async function provisioningRate(
  db: Db,
  factoryId: number,
  now = new Date(),
  minutes = RATE_WINDOW_MINUTES,
): Promise<RateSeries> {
  const first = new Date(Math.floor(now.getTime() / 60_000) * 60_000 - (minutes - 1) * 60_000);
  const done = db
    .selectFrom('device_objects')
    .innerJoin('devices', 'devices.id', 'device_objects.device_row_id')
    .select((eb) => eb.fn.max('device_objects.updated_at').as('done_at'))
    .where('devices.factory_id', '=', factoryId)
    .groupBy('device_objects.device_row_id')
    .having(
      sql<SqlBool>`SUM(CASE WHEN device_objects.state = 'PROVISIONING_COMPLETED' THEN 0 ELSE 1 END) = 0`,
    )
    .having((eb) => eb.fn.max('device_objects.updated_at'), '>=', first.toISOString())
    .as('done');
  const minute = sql<string>`SUBSTR(done.done_at, 1, 16)`;
  const rows = await db
    .selectFrom(done)
    .select([minute.as('minute'), (eb) => eb.fn.countAll<number>().as('n')])
    .groupBy('minute')
    .execute();
  const perMinute = new Array<number>(minutes).fill(0);
  for (const r of rows) {
    const at = Date.parse(`${r.minute}:00.000Z`);
    const i = Math.floor((at - first.getTime()) / 60_000);
    if (i >= 0 && i < minutes) perMinute[i] = Number(r.n);
  }
  return { from: first.toISOString().slice(0, 16), perMinute };
}

export interface DeviceFilter {
  /** Either id form; matches that one device. */
  id?: string;
  group?: string;
  nc12?: string;
  state?: DeviceState;
}

export interface FoundDevice {
  row: number;
  deviceId: string;
  group: string;
  nc12: string;
  state: DeviceState;
  lastConnection: string | null;
}

/**
 * One page of active devices matching `filter`, keyset-paged by row id like the allow-list
 * listing, so a page costs the same on the first and the thousandth page and never loads the
 * whole fleet. `next` is the cursor of the following page, or null.
 */
export async function searchDevices(
  db: Db,
  factoryId: number,
  filter: DeviceFilter,
  page: { after?: number; limit?: number } = {},
): Promise<{ devices: FoundDevice[]; next: number | null }> {
  const limit = page.limit ?? DEVICE_SEARCH_PAGE;
  let query = db
    .selectFrom('devices')
    .innerJoin('device_groups', 'device_groups.id', 'devices.group_id')
    .select([
      'devices.id as row',
      'devices.device_id',
      'devices.nc12',
      'devices.last_connection',
      'device_groups.name as group',
      deviceRank().as('rank'),
    ])
    .where('devices.factory_id', '=', factoryId)
    .where('devices.deleted_at', 'is', null);
  if (filter.id !== undefined) {
    const id = tryParseDeviceId(filter.id.trim());
    if (!id) {
      throw new KeyferryError(
        'invalid_device_id',
        `${JSON.stringify(filter.id)} is not a device id: search with ${DEVICE_ID_FORMS}`,
      );
    }
    query = query.where('devices.device_id', '=', id.decimal);
  }
  if (filter.group !== undefined) query = query.where('device_groups.name', '=', filter.group);
  if (filter.nc12 !== undefined) query = query.where('devices.nc12', '=', filter.nc12);
  if (filter.state !== undefined) {
    const rank = DEVICE_STATES.indexOf(filter.state);
    query = query.where(sql<SqlBool>`${deviceRank()} = ${sql.lit(rank)}`);
  }
  if (page.after !== undefined) query = query.where('devices.id', '>', page.after);
  const rows = await query
    .orderBy('devices.id')
    .limit(limit + 1)
    .execute();
  const shown = rows.slice(0, limit);
  return {
    devices: shown.map((r) => ({
      row: r.row,
      deviceId: r.device_id,
      group: r.group,
      nc12: r.nc12,
      state: DEVICE_STATES[Number(r.rank)]!,
      lastConnection: r.last_connection,
    })),
    next: rows.length > limit ? shown[shown.length - 1]!.row : null,
  };
}

import { DEVICE_ID_FORMS, KeyferryError, tryParseDeviceId } from '@keyferry/core';
import type { Db } from '../storage/database.ts';
import type { ProvisioningState } from '../storage/tables.ts';
import { DEVICE_STATES, type DeviceState, stateRank } from './device-state.ts';

export { DEVICE_STATES, type DeviceState } from './device-state.ts';

const FAILED_STATES = ['GENERATION_FAILED', 'PROVISIONING_FAILED'] as const satisfies readonly DeviceState[];

/** Devices a console page shows at once. */
export const DEVICE_SEARCH_PAGE = 50;
/** Failures the overview lists. */
export const LATEST_FAILURES = 10;
/** Minutes the provisioning-rate chart covers. */
export const RATE_WINDOW_MINUTES = 30;

/** The query of devicesByState: a range of devices_factory_state, counted from the index alone. */
export function devicesByStateQuery(db: Db, factoryId: number) {
  return db
    .selectFrom('devices')
    .select(['state_rank', (eb) => eb.fn.countAll<number>().as('n')])
    .where('factory_id', '=', factoryId)
    .where('deleted_at', 'is', null)
    .groupBy('state_rank');
}

/** Active devices of a factory counted by {@link DEVICE_STATES}; every state is present. */
export async function devicesByState(db: Db, factoryId: number): Promise<Record<DeviceState, number>> {
  const rows = await devicesByStateQuery(db, factoryId).execute();
  const counts = Object.fromEntries(DEVICE_STATES.map((s) => [s, 0])) as Record<DeviceState, number>;
  for (const r of rows) counts[DEVICE_STATES[Number(r.state_rank)]!] += Number(r.n);
  return counts;
}

export interface ObjectFailure {
  deviceId: string;
  object: string;
  state: ProvisioningState;
  reason: string | null;
  at: string;
}

/**
 * The newest failed objects of active devices, with the reason the device or service gave:
 * the latest failed devices come from the state index, then their failed objects.
 */
export async function latestFailures(
  db: Db,
  factoryId: number,
  limit = LATEST_FAILURES,
): Promise<ObjectFailure[]> {
  const failed = db
    .selectFrom('devices')
    .select(['devices.id', 'devices.device_id'])
    .where('devices.factory_id', '=', factoryId)
    .where('devices.deleted_at', 'is', null)
    .where('devices.state_rank', 'in', FAILED_STATES.map(stateRank))
    .orderBy('devices.state_at', 'desc')
    .limit(limit)
    .as('failed');
  const rows = await db
    .selectFrom(failed)
    .innerJoin('device_objects', 'device_objects.device_row_id', 'failed.id')
    .innerJoin('secure_objects', 'secure_objects.id', 'device_objects.secure_object_id')
    .select([
      'failed.device_id',
      'secure_objects.name',
      'device_objects.state',
      'device_objects.reason',
      'device_objects.updated_at',
    ])
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
  const counts: Record<string, unknown> = await provisioningRateQuery(
    db,
    factoryId,
    now,
    minutes,
  ).executeTakeFirstOrThrow();
  return {
    from: rateEdge(now, minutes, 0).slice(0, 16),
    perMinute: Array.from({ length: minutes }, (_, i) => Number(counts[`m${i}`])),
  };
}

/** The start of minute `i` of the rate chart's window ending at `now`, ISO 8601. */
function rateEdge(now: Date, minutes: number, i: number): string {
  const first = Math.floor(now.getTime() / 60_000) * 60_000 - (minutes - 1) * 60_000;
  return new Date(first + i * 60_000).toISOString();
}

/**
 * The query of provisioningRate: one count per minute (`m0`, `m1`, …), each a range of
 * devices_factory_state (migration 016). Counting the window's rows grouped by their minute
 * sorted them all first: ~4× the time at 40,000 rows.
 */
export function provisioningRateQuery(db: Db, factoryId: number, now: Date, minutes: number) {
  return db.selectNoFrom((eb) =>
    Array.from({ length: minutes }, (_, i) =>
      eb
        .selectFrom('devices')
        .select((c) => c.fn.countAll<number>().as('n'))
        .where('devices.factory_id', '=', factoryId)
        .where('devices.deleted_at', 'is', null)
        .where('devices.state_rank', '=', stateRank('PROVISIONING_COMPLETED'))
        .where('devices.state_at', '>=', rateEdge(now, minutes, i))
        .where('devices.state_at', '<', rateEdge(now, minutes, i + 1))
        .as(`m${i}`),
    ),
  );
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
      'devices.state_rank',
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
    query = query.where('devices.state_rank', '=', stateRank(filter.state));
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
      state: DEVICE_STATES[Number(r.state_rank)]!,
      lastConnection: r.last_connection,
    })),
    next: rows.length > limit ? shown[shown.length - 1]!.row : null,
  };
}

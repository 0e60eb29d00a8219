import type { Db } from '../storage/database.ts';

export const DEFAULT_DEVICE_PAGE = 1_000;
export const MAX_DEVICE_PAGE = 10_000;
/** Rows read per query while the whole allow-list streams out (memory stays flat). */
export const DEVICE_STREAM_BATCH = 1_000;

/** One allow-list row as `GET el2g/devices/` shows it (fioctl's shape). */
export interface ListedDevice {
  'device-group': string;
  id: string;
  'last-connection': string | null;
}

export interface DevicePage {
  devices: ListedDevice[];
  /** Keyset cursor for the next page (`?after=`), or null after the last page. */
  next: number | null;
}

/**
 * Active devices in insertion order, keyset-paged by row id: a page never repeats or skips a
 * device because of inserts made while a client pages (new rows land after every cursor).
 * `offset` serves fioctl-style `?page=` and is stable under inserts for the same reason.
 */
export async function listDevices(
  db: Db,
  factoryId: number,
  options: { limit: number; after?: number; offset?: number },
): Promise<DevicePage> {
  let query = db
    .selectFrom('devices')
    .innerJoin('device_groups', 'device_groups.id', 'devices.group_id')
    .select(['devices.id as row', 'devices.device_id', 'devices.last_connection', 'device_groups.name'])
    .where('devices.factory_id', '=', factoryId)
    .where('devices.deleted_at', 'is', null);
  if (options.after !== undefined) query = query.where('devices.id', '>', options.after);
  query = query.orderBy('devices.id').limit(options.limit);
  if (options.offset !== undefined && options.offset > 0) query = query.offset(options.offset);
  const rows = await query.execute();
  const last = rows[rows.length - 1];
  return {
    devices: rows.map((r) => ({
      'device-group': r.name,
      id: r.device_id,
      'last-connection': r.last_connection,
    })),
    next: rows.length === options.limit && last ? last.row : null,
  };
}

/**
 * Every active device, read page by page (keyset, as {@link listDevices}) so that an
 * allow-list of any length streams out without being held in memory.
 */
export async function* allDevices(
  db: Db,
  factoryId: number,
  batch = DEVICE_STREAM_BATCH,
): AsyncGenerator<ListedDevice> {
  let after: number | undefined;
  for (;;) {
    const page = await listDevices(db, factoryId, {
      limit: batch,
      ...(after === undefined ? {} : { after }),
    });
    yield* page.devices;
    if (page.next === null) return;
    after = page.next;
  }
}

/** Names of the groups that hold active devices (lets a streaming client size its columns). */
export async function groupsWithDevices(db: Db, factoryId: number): Promise<string[]> {
  const groups = await groupsWithDevicesQuery(db, factoryId).execute();
  return groups.map((g) => g.name);
}

/** The query of {@link groupsWithDevices}; its EXISTS runs on the devices_group_active index (migration 011). */
export function groupsWithDevicesQuery(db: Db, factoryId: number) {
  return db
    .selectFrom('device_groups')
    .select('name')
    .where('factory_id', '=', factoryId)
    .where((eb) =>
      eb.exists(
        eb
          .selectFrom('devices')
          .select('devices.id')
          .whereRef('devices.group_id', '=', 'device_groups.id')
          .where('devices.deleted_at', 'is', null),
      ),
    )
    .orderBy('name');
}

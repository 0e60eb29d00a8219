import { setImmediate as nextTurn } from 'node:timers/promises';
import { DEVICE_ID_FORMS, KeyferryError, tryParseDeviceId } from '@keyferry/core';
import { chunks } from '../allowlist/device-results.ts';
import { recordAudit } from '../audit/audit-log.ts';
import type { Db } from '../storage/database.ts';

/** Devices marked per transaction; the request yields to the event loop between chunks. */
export const ROTATION_CHUNK = 250;
/** Most device ids one rotate request names (larger fleets: --group or --all). */
export const MAX_ROTATE_IDS = 10_000;

/** Which certificates to mark: exactly one of `devices`, `group`, `all`; `object` narrows it. */
export interface RotationSelection {
  devices?: readonly string[] | undefined;
  group?: string | undefined;
  all?: boolean | undefined;
  object?: string | undefined;
}

/** What a rotate request did. */
export interface RotationResult {
  /** Devices in the selection (allow-listed, not deleted). */
  devices: number;
  /** Live certificates newly marked. */
  marked: number;
  /** Live certificates that were marked already (the device has not rotated yet). */
  alreadyMarked: number;
}

/**
 * Marks the live certificate of each selected device (and object) for rotation: the device's
 * manifest then says `rotate: true` for the object until the device reports a newer
 * certificate, which supersedes the marked one. Every name is checked before anything
 * changes (unknown device, group or object → `not_found`); a selection without any live
 * certificate is refused (`conflict`) and changes nothing. Marking commits a chunk of devices
 * at a time and yields between chunks, so `all` over a large fleet does not hold the process.
 */
export async function markForRotation(
  db: Db,
  factoryId: number,
  selection: RotationSelection,
  change: { actor: string; correlationId: string },
  now = new Date(),
): Promise<RotationResult> {
  const given = [selection.devices !== undefined, selection.group !== undefined, selection.all === true];
  if (given.filter(Boolean).length !== 1) {
    throw new KeyferryError(
      'invalid_request',
      'select the devices to rotate: name device ids, or a group, or all — exactly one of them',
    );
  }
  const objectIds = await certificateObjects(db, factoryId, selection.object);
  const batches = await selectDevices(db, factoryId, selection);
  let devices = 0;
  let live = 0;
  let alreadyMarked = 0;
  // refuse before any change: count what the selection holds first
  for (const rows of batches()) {
    const part = await rows;
    devices += part.length;
    if (part.length === 0) continue;
    const counts = await liveCertificates(db, part, objectIds)
      .select((eb) => [
        eb.fn.countAll<number>().as('n'),
        eb.fn.count<number>('rotation_requested_at').as('marked'),
      ])
      .executeTakeFirstOrThrow();
    live += Number(counts.n);
    alreadyMarked += Number(counts.marked);
    await nextTurn();
  }
  if (live === 0) {
    throw new KeyferryError(
      'conflict',
      `the selection (${devices} device${devices === 1 ? '' : 's'}) holds no live certificate${selection.object ? ` of ${selection.object}` : ''} to rotate: devices get their first certificate when they enroll`,
    );
  }
  let marked = 0;
  for (const rows of batches()) {
    const part = await rows;
    if (part.length === 0) continue;
    const ids = (await liveCertificates(db, part, objectIds).select('certificates.id').execute()).map(
      (r) => r.id,
    );
    if (ids.length > 0) {
      const result = await db
        .updateTable('certificates')
        .set({ rotation_requested_at: now.toISOString() })
        .where('id', 'in', ids)
        .where('rotation_requested_at', 'is', null)
        .where('revoked_at', 'is', null)
        .executeTakeFirst();
      marked += Number(result.numUpdatedRows);
    }
    await nextTurn();
  }
  await recordAudit(
    db,
    {
      factoryId,
      actor: change.actor,
      action: 'el2g.devices.rotate',
      object: selection.group
        ? `group:${selection.group}`
        : selection.all
          ? 'devices:all'
          : `devices:${selection.devices!.length}`,
      detail: { object: selection.object ?? null, devices, marked, alreadyMarked },
      correlationId: change.correlationId,
    },
    now,
  );
  return { devices, marked, alreadyMarked };
}

/** The CERTIFICATE objects to rotate: the one named, or every one of the factory. */
async function certificateObjects(db: Db, factoryId: number, name: string | undefined): Promise<number[]> {
  let query = db
    .selectFrom('secure_objects')
    .select(['id', 'name'])
    .where('factory_id', '=', factoryId)
    .where('type', '=', 'CERTIFICATE');
  if (name !== undefined) query = query.where('name', '=', name);
  const rows = await query.execute();
  if (name !== undefined && rows.length === 0) {
    throw new KeyferryError(
      'not_found',
      `no CERTIFICATE object ${JSON.stringify(name)} in this factory: el2g status lists its secure objects`,
    );
  }
  return rows.map((r) => r.id);
}

/**
 * The newest live certificate of each (device, object): during a renewal the older one stays
 * live until the report, and only the newest is the one to rotate.
 */
function liveCertificates(db: Db, deviceRows: readonly number[], objectIds: readonly number[]) {
  return db.selectFrom('certificates').where('certificates.id', 'in', (eb) =>
    eb
      .selectFrom('certificates as c')
      .select((e) => e.fn.max('c.id').as('id'))
      .where('c.device_row_id', 'in', deviceRows)
      .where('c.secure_object_id', 'in', objectIds.length > 0 ? objectIds : [-1])
      .where('c.revoked_at', 'is', null)
      .groupBy(['c.device_row_id', 'c.secure_object_id']),
  );
}

/**
 * The selected devices' row ids in chunks, as a generator that can be run again: named ids are
 * resolved at once (an unknown one refuses the request); a group or all devices page by row id.
 */
async function selectDevices(
  db: Db,
  factoryId: number,
  selection: RotationSelection,
): Promise<() => Generator<Promise<number[]>>> {
  if (selection.devices !== undefined) {
    const rows = await namedDevices(db, factoryId, selection.devices);
    return function* () {
      for (const part of chunks(rows, ROTATION_CHUNK)) yield Promise.resolve(part);
    };
  }
  let groupId: number | undefined;
  if (selection.group !== undefined) {
    const group = await db
      .selectFrom('device_groups')
      .select('id')
      .where('factory_id', '=', factoryId)
      .where('name', '=', selection.group)
      .executeTakeFirst();
    if (!group) {
      throw new KeyferryError(
        'not_found',
        `no device group ${JSON.stringify(selection.group)} in this factory: el2g devices list shows the groups`,
      );
    }
    groupId = group.id;
  }
  return function* () {
    let after = 0;
    let done = false;
    while (!done) {
      yield (async () => {
        let query = db
          .selectFrom('devices')
          .select('id')
          .where('factory_id', '=', factoryId)
          .where('deleted_at', 'is', null)
          .where('id', '>', after)
          .orderBy('id')
          .limit(ROTATION_CHUNK);
        if (groupId !== undefined) query = query.where('group_id', '=', groupId);
        const ids = (await query.execute()).map((r) => r.id);
        if (ids.length < ROTATION_CHUNK) done = true;
        if (ids.length > 0) after = ids[ids.length - 1]!;
        return ids;
      })();
    }
  };
}

async function namedDevices(db: Db, factoryId: number, texts: readonly string[]): Promise<number[]> {
  if (texts.length === 0) throw new KeyferryError('invalid_request', 'name at least one device id');
  const invalid = texts.filter((t) => tryParseDeviceId(t) === undefined);
  if (invalid.length > 0) {
    throw new KeyferryError(
      'invalid_device_id',
      `invalid device id${invalid.length > 1 ? 's' : ''} ${invalid
        .slice(0, 10)
        .map((t) => JSON.stringify(t))
        .join(', ')}: a device id is ${DEVICE_ID_FORMS}`,
    );
  }
  const decimals = [...new Set(texts.map((t) => tryParseDeviceId(t)!.decimal))];
  const found = new Map<string, number>();
  for (const part of chunks(decimals, ROTATION_CHUNK)) {
    const rows = await db
      .selectFrom('devices')
      .select(['id', 'device_id'])
      .where('factory_id', '=', factoryId)
      .where('deleted_at', 'is', null)
      .where('device_id', 'in', part)
      .execute();
    for (const r of rows) found.set(r.device_id, r.id);
  }
  const unknown = decimals.filter((d) => !found.has(d));
  if (unknown.length > 0) {
    throw new KeyferryError(
      'not_found',
      `${unknown.length} device${unknown.length > 1 ? 's are' : ' is'} not on this factory's allow-list (${unknown.slice(0, 10).join(', ')}${unknown.length > 10 ? ', …' : ''}): nothing was marked; check the ids or add the devices first`,
    );
  }
  return [...found.values()];
}

import { KeyferryError } from '@keyferry/core';
import type { Db } from '../storage/database.ts';
import { audit, type ChangeContext } from './secure-objects.ts';

/** A device group as the provisioning API shows it. */
export interface DeviceGroup {
  id: number;
  name: string;
  nc12: string;
  production: boolean;
}

export async function listDeviceGroups(db: Db, factoryId: number): Promise<DeviceGroup[]> {
  const rows = await db
    .selectFrom('device_groups')
    .selectAll()
    .where('factory_id', '=', factoryId)
    .orderBy('id')
    .execute();
  return rows.map((r) => ({ id: r.id, name: r.name, nc12: r.nc12, production: r.production === 1 }));
}

export async function getDeviceGroup(db: Db, factoryId: number, id: number): Promise<DeviceGroup> {
  const group = (await listDeviceGroups(db, factoryId)).find((g) => g.id === id);
  if (!group) throw new KeyferryError('not_found', `device group ${id} not found in this factory`);
  return group;
}

/** The groups a secure object is assigned to. */
export async function objectGroups(db: Db, objectId: number): Promise<number[]> {
  const rows = await db
    .selectFrom('group_objects')
    .select('group_id')
    .where('secure_object_id', '=', objectId)
    .orderBy('group_id')
    .execute();
  return rows.map((r) => r.group_id);
}

/**
 * Assigns secure objects to device groups (already assigned pairs are left alone). Every device
 * of a group receives all its objects, so the plan's per-device limits (`max_keypairs`,
 * `max_certificates`) bound what a group may hold: going past one is refused with
 * `object_quota_exceeded` and nothing is assigned. Runs inside the caller's transaction.
 * Returns the number of new assignments.
 */
export async function assignObjectsToGroups(
  db: Db,
  factoryId: number,
  objectIds: readonly number[],
  groupIds: readonly number[],
  change: ChangeContext,
  now: Date,
): Promise<number> {
  const plan = await db
    .selectFrom('factory_el2g')
    .select(['max_keypairs', 'max_certificates'])
    .where('factory_id', '=', factoryId)
    .executeTakeFirst();
  if (!plan) throw new KeyferryError('internal', `factory ${factoryId} has no EdgeLock 2GO plan row`);
  const objects = await db
    .selectFrom('secure_objects')
    .select(['id', 'type', 'name'])
    .where('factory_id', '=', factoryId)
    .execute();
  const typeOf = new Map(objects.map((o) => [o.id, o]));
  const groups = new Map((await listDeviceGroups(db, factoryId)).map((g) => [g.id, g]));
  const toInsert: Array<{ group_id: number; secure_object_id: number }> = [];
  for (const groupId of groupIds) {
    const group = groups.get(groupId);
    if (!group) throw new KeyferryError('not_found', `device group ${groupId} not found in this factory`);
    const held = new Set(
      (
        await db
          .selectFrom('group_objects')
          .select('secure_object_id')
          .where('group_id', '=', groupId)
          .execute()
      ).map((r) => r.secure_object_id),
    );
    for (const objectId of objectIds) {
      if (!typeOf.has(objectId)) {
        throw new KeyferryError('not_found', `secure object ${objectId} not found in this factory`);
      }
      if (held.has(objectId)) continue;
      held.add(objectId);
      toInsert.push({ group_id: groupId, secure_object_id: objectId });
    }
    const count = (type: string) => [...held].filter((id) => typeOf.get(id)?.type === type).length;
    for (const [type, limit, max, word] of [
      ['KEYPAIR', 'max_keypairs', plan.max_keypairs, 'key pairs'],
      ['CERTIFICATE', 'max_certificates', plan.max_certificates, 'certificates'],
    ] as const) {
      const usage = count(type);
      if (usage > max) {
        throw new KeyferryError(
          'object_quota_exceeded',
          `device group ${group.name} would hold ${usage} ${word} but the plan allows ${max} per device (${limit}); unassign one first or raise the plan`,
          { detail: { group: group.name, limit, usage, max } },
        );
      }
    }
  }
  for (const row of toInsert) {
    await db
      .insertInto('group_objects')
      .values({ ...row, assigned_at: now.toISOString() })
      .execute();
    await audit(
      db,
      factoryId,
      change,
      'secure-object.assign',
      `secure-object:${typeOf.get(row.secure_object_id)?.name}`,
      { group: groups.get(row.group_id)?.name },
      now,
    );
  }
  return toInsert.length;
}

/** Assigns objects to every device group the factory has (what the gateway and AWS objects need). */
export async function assignToAllGroups(
  db: Db,
  factoryId: number,
  objectIds: readonly number[],
  change: ChangeContext,
  now: Date,
): Promise<number> {
  const groups = await listDeviceGroups(db, factoryId);
  return assignObjectsToGroups(
    db,
    factoryId,
    objectIds,
    groups.map((g) => g.id),
    change,
    now,
  );
}

/**
 * Removes one assignment; devices already provisioned keep what they have. A KEYPAIR whose
 * CERTIFICATE stays assigned to the group is refused: no device of the group could then make
 * the key that certificate needs.
 */
export async function unassignObject(
  db: Db,
  factoryId: number,
  objectId: number,
  groupId: number,
  change: ChangeContext,
  now: Date,
): Promise<void> {
  const group = await getDeviceGroup(db, factoryId, groupId);
  const object = await db
    .selectFrom('secure_objects')
    .select(['name', 'type'])
    .where('factory_id', '=', factoryId)
    .where('id', '=', objectId)
    .executeTakeFirst();
  if (!object) throw new KeyferryError('not_found', `secure object ${objectId} not found in this factory`);
  if (object.type === 'KEYPAIR') {
    const certificate = await db
      .selectFrom('secure_objects')
      .innerJoin('group_objects', 'group_objects.secure_object_id', 'secure_objects.id')
      .select(['secure_objects.id', 'secure_objects.name'])
      .where('secure_objects.keypair_id', '=', objectId)
      .where('group_objects.group_id', '=', groupId)
      .executeTakeFirst();
    if (certificate) {
      throw new KeyferryError(
        'conflict',
        `secure object ${object.name} is the key pair of ${certificate.name}, which stays assigned to device group ${group.name}; unassign ${certificate.name} (id ${certificate.id}) from the group first`,
        { detail: { certificate: certificate.name, group: group.name } },
      );
    }
  }
  const res = await db
    .deleteFrom('group_objects')
    .where('group_id', '=', groupId)
    .where('secure_object_id', '=', objectId)
    .executeTakeFirst();
  if (Number(res.numDeletedRows) === 0) {
    throw new KeyferryError(
      'not_found',
      `secure object ${object.name} is not assigned to device group ${group.name}`,
    );
  }
  await audit(
    db,
    factoryId,
    change,
    'secure-object.unassign',
    `secure-object:${object.name}`,
    { group: group.name },
    now,
  );
}

import { compiledOnce } from '../storage/compiled-query.ts';
import type { Db } from '../storage/database.ts';
import type { ProvisioningState } from '../storage/tables.ts';
import type { SecureObject } from './secure-objects.ts';

/** One secure object assigned to a device's group, with the device's state of it. */
export interface AssignedObject extends SecureObject {
  state: ProvisioningState;
  reason: string | null;
}

/** The objects of the group `groupId` with the device's state of each (rows for assignedObject). */
function objectsQuery(db: Db, deviceRowId: number, groupId: number) {
  return db
    .selectFrom('group_objects')
    .innerJoin('secure_objects', 'secure_objects.id', 'group_objects.secure_object_id')
    .leftJoin('device_objects', (join) =>
      join
        .onRef('device_objects.secure_object_id', '=', 'secure_objects.id')
        .on('device_objects.device_row_id', '=', deviceRowId),
    )
    .select([
      'secure_objects.id',
      'secure_objects.name',
      'secure_objects.type',
      'secure_objects.object_id',
      'secure_objects.ca_id',
      'secure_objects.keypair_id',
      'secure_objects.validity_days',
      'secure_objects.renewal_validity_days',
      'secure_objects.renewal_window_days',
      'secure_objects.validity_seconds',
      'secure_objects.renewal_validity_seconds',
      'secure_objects.renewal_window_seconds',
      'device_objects.state',
      'device_objects.reason',
    ])
    .where('group_objects.group_id', '=', groupId);
}
/**
 * objectsQuery in the order the device-link works in, KEYPAIRs first (then by name): the base of
 * each device-link request's read of the objects, which add their own joins to it (the report's
 * live certificates, the enrollment's plan and CAs, the manifest's newest certificates).
 */
export function deviceLinkObjectsQuery(db: Db, deviceRowId: number, groupId: number) {
  return objectsQuery(db, deviceRowId, groupId)
    .orderBy('secure_objects.type', 'desc')
    .orderBy('secure_objects.name');
}
const byObjectId = compiledOnce((db, [rowId, groupId]: [number, number]) =>
  objectsQuery(db, rowId, groupId).orderBy('secure_objects.object_id'),
);
const keypairsFirstWithLive = compiledOnce((db, [rowId, groupId]: [number, number]) =>
  deviceLinkObjectsQuery(db, rowId, groupId).select((eb) =>
    eb
      .selectFrom('certificates')
      .select(eb.fn.countAll().as('n'))
      .where('certificates.device_row_id', '=', rowId)
      .whereRef('certificates.secure_object_id', '=', 'secure_objects.id')
      .where('certificates.revoked_at', 'is', null)
      .as('live_certificates'),
  ),
);

/**
 * The objects of a device's group with their state for that device, in object id order as
 * `el2g devices show` lists them; a missing device_objects row means GENERATION_ON_CONNECTION
 * (assigned, device not seen yet).
 */
export async function assignedObjects(
  db: Db,
  device: { rowId: number; groupId: number },
): Promise<AssignedObject[]> {
  const { rows } = await byObjectId(db, device.rowId, device.groupId);
  return rows.map(assignedObject);
}

/**
 * The objects in the device-link's order, each with how many live (unrevoked) certificates the
 * device has of it: a report reads whether a rotation is to end with its objects (report.ts).
 */
export async function assignedObjectsWithLive(
  db: Db,
  device: { rowId: number; groupId: number },
): Promise<(AssignedObject & { liveCertificates: number })[]> {
  const { rows } = await keypairsFirstWithLive(db, device.rowId, device.groupId);
  // a count is a bigint, which pg answers as a string
  return rows.map((r) => ({ ...assignedObject(r), liveCertificates: Number(r.live_certificates) }));
}

type ObjectRow = Awaited<ReturnType<typeof byObjectId>>['rows'][number];

/** One row of objectsQuery as the object it describes. */
export function assignedObject(r: ObjectRow): AssignedObject {
  return {
    id: r.id,
    name: r.name,
    type: r.type,
    objectId: r.object_id,
    caId: r.ca_id,
    keypairId: r.keypair_id,
    validityDays: r.validity_days,
    renewalValidityDays: r.renewal_validity_days,
    renewalWindowDays: r.renewal_window_days,
    validitySeconds: r.validity_seconds,
    renewalValiditySeconds: r.renewal_validity_seconds,
    renewalWindowSeconds: r.renewal_window_seconds,
    state: r.state ?? 'GENERATION_ON_CONNECTION',
    reason: r.reason ?? null,
  };
}

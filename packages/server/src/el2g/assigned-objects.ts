import { compiledOnce } from '../storage/compiled-query.ts';
import type { Db } from '../storage/database.ts';
import type { ProvisioningState, SecureObjectType } from '../storage/tables.ts';

/** One secure object assigned to a device's group, with the device's state of it. */
export interface AssignedObject {
  id: number;
  name: string;
  type: SecureObjectType;
  objectId: string;
  caId: number | null;
  keypairId: number | null;
  validityDays: number | null;
  renewalValidityDays: number | null;
  renewalWindowDays: number | null;
  validitySeconds: number | null;
  renewalValiditySeconds: number | null;
  renewalWindowSeconds: number | null;
  state: ProvisioningState;
  reason: string | null;
}

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
const byObjectId = compiledOnce((db, [rowId, groupId]: [number, number]) =>
  objectsQuery(db, rowId, groupId).orderBy('secure_objects.object_id'),
);
const keypairsFirst = compiledOnce((db, [rowId, groupId]: [number, number]) =>
  objectsQuery(db, rowId, groupId).orderBy('secure_objects.type', 'desc').orderBy('secure_objects.name'),
);

/** The device's newest live (unrevoked) certificate of an object, as the manifest names it. */
export interface LiveCertificate {
  serial: string;
  notAfter: string;
  /** An operator marked it for rotation. */
  rotate: boolean;
}

/**
 * The device-link's order (keypairs first) with each object's newest live certificate for the
 * device joined in: the manifest's one read.
 */
const keypairsFirstWithLive = compiledOnce((db, [rowId, groupId]: [number, number]) =>
  objectsQuery(db, rowId, groupId)
    .leftJoin('certificates as live', (join) =>
      join.on((eb) =>
        eb(
          'live.id',
          '=',
          eb
            .selectFrom('certificates as c')
            .select((s) => s.fn.max('c.id').as('id'))
            .where('c.device_row_id', '=', rowId)
            .whereRef('c.secure_object_id', '=', 'secure_objects.id')
            .where('c.revoked_at', 'is', null),
        ),
      ),
    )
    .select([
      'live.serial_hex as live_serial',
      'live.not_after as live_not_after',
      'live.rotation_requested_at as live_rotation_requested_at',
    ])
    .orderBy('secure_objects.type', 'desc')
    .orderBy('secure_objects.name'),
);

/**
 * assignedObjects in the device-link's order, each with the device's newest live certificate
 * of it (null when it has none: never issued, revoked, or the device deleted and added again).
 */
export async function assignedObjectsWithLive(
  db: Db,
  device: { rowId: number; groupId: number },
): Promise<Array<AssignedObject & { live: LiveCertificate | null }>> {
  const { rows } = await keypairsFirstWithLive(db, device.rowId, device.groupId);
  return rows.map((r) => ({
    ...assignedObject(r),
    live:
      r.live_serial === null || r.live_not_after === null
        ? null
        : {
            serial: r.live_serial,
            notAfter: new Date(r.live_not_after).toISOString(),
            rotate: r.live_rotation_requested_at !== null,
          },
  }));
}

/**
 * The objects of a device's group with their state for that device; a missing device_objects
 * row means GENERATION_ON_CONNECTION (assigned, device not seen yet). `object-id` orders as
 * `el2g devices show` lists them; `keypairs-first` is the order the device-link works in.
 */
export async function assignedObjects(
  db: Db,
  device: { rowId: number; groupId: number },
  order: 'object-id' | 'keypairs-first',
): Promise<AssignedObject[]> {
  const { rows } = await (order === 'object-id' ? byObjectId : keypairsFirst)(
    db,
    device.rowId,
    device.groupId,
  );
  return rows.map(assignedObject);
}

type ObjectRow = Awaited<ReturnType<typeof byObjectId>>['rows'][number];

function assignedObject(r: ObjectRow): AssignedObject {
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

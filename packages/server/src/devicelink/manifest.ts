import { type AssignedObject, assignedObject, deviceLinkObjectsQuery } from '../el2g/assigned-objects.ts';
import { compiledOnce } from '../storage/compiled-query.ts';
import type { Db } from '../storage/database.ts';
import type { ProvisioningState, SecureObjectType } from '../storage/tables.ts';
import { recordDeviceStatesAlone } from './device-records.ts';
import { type RenewalPolicy, renewalPolicy } from './renewal-policy.ts';
import type { DeviceSession } from './session.ts';

/** One entry of the manifest (docs/device-link.md). */
export interface ManifestObject {
  name: string;
  type: SecureObjectType;
  /** 8 hex digits, the SE object id (e.g. 83000042). */
  objectId: string;
  /** CERTIFICATE only: the object id of the key pair it certifies. */
  keyObjectId?: string;
  /** The PKCS#11 label on the device: SE_<objectId>. */
  label: string;
  state: ProvisioningState;
  reason?: string;
  /**
   * CERTIFICATE only: the serial (lowercase hex) of the live certificate issued to this
   * device for the object, null when it has none (never issued, revoked, or the device was
   * deleted and added again). A device holding another certificate enrolls again.
   */
  certificateSerial?: string | null;
  /** CERTIFICATE only: an operator marked the live certificate for rotation (el2g devices rotate). */
  rotate?: boolean;
  /** CERTIFICATE only: expiry (ISO 8601) of that live certificate, null when there is none. */
  notAfter?: string | null;
  /** CERTIFICATE only: validity of a renewed certificate and how long before expiry devices renew. */
  renewal?: RenewalPolicy;
}

export interface Manifest {
  device: string;
  product: string;
  group: string;
  objects: ManifestObject[];
}

/**
 * What the device must hold. Fetching it is the device's connection: objects it has not
 * started yet move from GENERATION_ON_CONNECTION to GENERATION_TRIGGERED (the device now
 * generates the keys), and the connection time is recorded.
 */
export async function deviceManifest(
  db: Db,
  session: DeviceSession,
  change: { correlationId: string },
  now = new Date(),
): Promise<Manifest> {
  const { objects, live } = await manifestObjects(db, session.device);
  const byId = new Map(objects.map((o) => [o.id, o]));
  const triggered = objects.filter((o) => o.state === 'GENERATION_ON_CONNECTION');
  await recordDeviceStatesAlone(
    db,
    session,
    triggered.map((o) => ({ secureObjectId: o.id, state: 'GENERATION_TRIGGERED' as const, reason: null })),
    now,
    {
      factoryId: session.factory.id,
      actor: `device:${session.device.deviceId}`,
      action: 'device-link.manifest',
      object: `device:${session.device.deviceId}`,
      detail: { group: session.device.groupName, triggered: triggered.map((o) => o.name) },
      correlationId: change.correlationId,
    },
  );
  return {
    device: session.device.deviceId,
    product: session.device.nc12,
    group: session.device.groupName,
    objects: objects.map((o) => {
      const state = o.state === 'GENERATION_ON_CONNECTION' ? 'GENERATION_TRIGGERED' : o.state;
      const key = o.keypairId === null ? undefined : byId.get(o.keypairId);
      return {
        name: o.name,
        type: o.type,
        objectId: o.objectId,
        ...(o.type === 'CERTIFICATE' && key ? { keyObjectId: key.objectId } : {}),
        label: `SE_${o.objectId}`,
        state,
        ...(o.reason ? { reason: o.reason } : {}),
        ...(o.type === 'CERTIFICATE'
          ? {
              certificateSerial: live.get(o.id)?.serial ?? null,
              notAfter: live.get(o.id)?.notAfter ?? null,
              renewal: renewalPolicy(o),
              rotate: live.get(o.id)?.rotate ?? false,
            }
          : {}),
      };
    }),
  };
}

/**
 * The objects with the device's newest live (unrevoked) certificate of each, if any: the
 * object's live certificates with no newer live one. Written so that PostgreSQL finds them
 * with `certificates_device_object`; a join on `id = (SELECT max(id) …)` hashed the whole
 * certificates table on every manifest (docs/performance.md).
 */
const objectsAndNewest = compiledOnce((db, [deviceRowId, groupId]: [number, number]) =>
  deviceLinkObjectsQuery(db, deviceRowId, groupId)
    .leftJoin('certificates', (join) =>
      join
        .on('certificates.device_row_id', '=', deviceRowId)
        .onRef('certificates.secure_object_id', '=', 'secure_objects.id')
        .on('certificates.revoked_at', 'is', null)
        .on((eb) =>
          eb.not(
            eb.exists(
              eb
                .selectFrom('certificates as newer')
                .select('newer.id')
                .where('newer.device_row_id', '=', deviceRowId)
                .whereRef('newer.secure_object_id', '=', 'secure_objects.id')
                .where('newer.revoked_at', 'is', null)
                .whereRef('newer.id', '>', 'certificates.id'),
            ),
          ),
        ),
    )
    .select(['certificates.serial_hex', 'certificates.not_after', 'certificates.rotation_requested_at']),
);

/**
 * The device's objects in the device-link's order (KEYPAIRs first) with their states, read in
 * one statement with each one's newest live certificate: secure object id → its serial and
 * expiry, and whether an operator marked it for rotation.
 */
async function manifestObjects(
  db: Db,
  device: { rowId: number; groupId: number },
): Promise<{
  objects: AssignedObject[];
  live: Map<number, { serial: string; notAfter: string; rotate: boolean }>;
}> {
  const { rows } = await objectsAndNewest(db, device.rowId, device.groupId);
  const live = new Map<number, { serial: string; notAfter: string; rotate: boolean }>();
  for (const r of rows) {
    if (r.serial_hex === null || r.not_after === null) continue;
    live.set(r.id, {
      serial: r.serial_hex,
      notAfter: new Date(r.not_after).toISOString(),
      rotate: r.rotation_requested_at !== null,
    });
  }
  return { objects: rows.map(assignedObject), live };
}

import { compiledOnce } from '../storage/compiled-query.ts';
import type { Db } from '../storage/database.ts';
import type { ProvisioningState, SecureObjectType } from '../storage/tables.ts';
import { deviceLinkObjects, recordDeviceStatesAlone } from './device-records.ts';
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
  const objects = await deviceLinkObjects(db, session.device);
  const live = await liveSerials(db, session.device.rowId);
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
 * Secure object id → serial and expiry of the device's newest live (unrevoked) certificate of
 * it, and whether an operator marked it for rotation.
 */
async function liveSerials(
  db: Db,
  deviceRowId: number,
): Promise<Map<number | null, { serial: string; notAfter: string; rotate: boolean }>> {
  const { rows } = await liveCertificates(db, deviceRowId);
  return new Map(
    rows.map((r) => [
      r.secure_object_id,
      {
        serial: r.serial_hex,
        notAfter: new Date(r.not_after).toISOString(),
        rotate: r.rotation_requested_at !== null,
      },
    ]),
  );
}

const liveCertificates = compiledOnce((db, [deviceRowId]: [number]) =>
  db
    .selectFrom('certificates')
    .select(['secure_object_id', 'serial_hex', 'not_after', 'rotation_requested_at'])
    .where('device_row_id', '=', deviceRowId)
    .where('revoked_at', 'is', null)
    .orderBy('id'),
);

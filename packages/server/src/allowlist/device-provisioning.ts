import { KeyferryError, parseDeviceId } from '@keyferry/core';
import type { Config } from '../config/schema.ts';
import { renewalPolicy } from '../devicelink/renewal-policy.ts';
import { assignedObjects } from '../el2g/assigned-objects.ts';
import { productCatalogue } from '../el2g/products.ts';
import type { Db } from '../storage/database.ts';
import type { ProvisioningState, SecureObjectType } from '../storage/tables.ts';

const DAY_MS = 24 * 3600 * 1000;

export interface AllowListedDevice {
  row: number;
  deviceId: string;
  nc12: string;
  groupId: number;
  group: string;
}

/** The active allow-list entry of a device id (either accepted form), or `not_found`. */
export async function findAllowListedDevice(
  db: Db,
  factoryId: number,
  text: string,
): Promise<AllowListedDevice> {
  const id = parseDeviceId(text);
  const row = await db
    .selectFrom('devices')
    .innerJoin('device_groups', 'device_groups.id', 'devices.group_id')
    .select([
      'devices.id as row',
      'devices.device_id',
      'devices.nc12',
      'devices.group_id',
      'device_groups.name',
    ])
    .where('devices.factory_id', '=', factoryId)
    .where('devices.device_id', '=', id.decimal)
    .where('devices.deleted_at', 'is', null)
    .executeTakeFirst();
  if (!row) {
    throw new KeyferryError(
      'not_found',
      `device ${id.decimal} is not on this factory's allow-list: add it with el2g devices add <12nc> ${text}`,
    );
  }
  return { row: row.row, deviceId: row.device_id, nc12: row.nc12, groupId: row.group_id, group: row.name };
}

/** `el2g-proxy/devices/<id>/product`: the device's hardware type, as EdgeLock 2GO named it. */
export function deviceProduct(
  config: Pick<Config, 'products'>,
  device: AllowListedDevice,
): { commercialName: string; nc12: string } {
  const product = productCatalogue(config).get(device.nc12);
  return { commercialName: product?.name ?? device.nc12, nc12: device.nc12 };
}

export interface SecureObjectProvisioning {
  secureObjectName: string;
  secureObjectType: SecureObjectType;
  provisioningState: ProvisioningState;
  /** The current (not revoked) certificate PEM of a CERTIFICATE object, else null. */
  certificate: string | null;
  /** Why a *_FAILED state failed. */
  reason: string | null;
  /**
   * CERTIFICATE with a current certificate: when it expires, from when the device renews it
   * (the object's renewal window before that), and how long a renewed one lives.
   */
  renewal?: {
    notAfter: string;
    renewFrom: string;
    renewedValidityDays: number;
    /** When an operator marked this certificate for rotation (el2g devices rotate); null if not marked. */
    rotationRequestedAt: string | null;
  };
}

/**
 * The objects assigned to the device's group with their state for this device: a missing
 * device_objects row means GENERATION_ON_CONNECTION (assigned, device not seen yet).
 */
export async function deviceProvisionings(
  db: Db,
  device: AllowListedDevice,
): Promise<SecureObjectProvisioning[]> {
  const objects = await assignedObjects(db, { rowId: device.row, groupId: device.groupId });
  const certificates = await db
    .selectFrom('certificates')
    .select(['secure_object_id', 'pem', 'not_after', 'rotation_requested_at'])
    .where('device_row_id', '=', device.row)
    .where('revoked_at', 'is', null)
    .orderBy('id')
    .execute();
  // the newest non-revoked certificate of each object wins (a renewal leaves the older one
  // live until the device reports the new one stored)
  const byObject = new Map(certificates.map((c) => [c.secure_object_id, c]));
  return objects.map((o) => {
    const current = o.type === 'CERTIFICATE' ? byObject.get(o.id) : undefined;
    const policy = renewalPolicy(o);
    return {
      secureObjectName: o.name,
      secureObjectType: o.type,
      provisioningState: o.state,
      certificate: current?.pem ?? null,
      reason: o.reason,
      ...(current
        ? {
            renewal: {
              notAfter: current.not_after,
              renewFrom: new Date(Date.parse(current.not_after) - policy.windowDays * DAY_MS).toISOString(),
              renewedValidityDays: policy.validityDays,
              rotationRequestedAt: current.rotation_requested_at,
            },
          }
        : {}),
    };
  });
}

/** A certificate issued to a device, as the console lists it. */
export interface DeviceCertificate {
  object: string | null;
  serialHex: string;
  notAfter: string;
  revokedAt: string | null;
  revocationReason: string | null;
}

/** Every certificate issued to the device, revoked ones included, newest first. */
export async function deviceCertificates(db: Db, device: AllowListedDevice): Promise<DeviceCertificate[]> {
  const rows = await db
    .selectFrom('certificates')
    .leftJoin('secure_objects', 'secure_objects.id', 'certificates.secure_object_id')
    .select([
      'secure_objects.name',
      'certificates.serial_hex',
      'certificates.not_after',
      'certificates.revoked_at',
      'certificates.revocation_reason',
    ])
    .where('certificates.device_row_id', '=', device.row)
    .orderBy('certificates.id', 'desc')
    .execute();
  return rows.map((r) => ({
    object: r.name,
    serialHex: r.serial_hex,
    notAfter: r.not_after,
    revokedAt: r.revoked_at,
    revocationReason: r.revocation_reason,
  }));
}

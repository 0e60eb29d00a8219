import type { Db } from '../storage/database.ts';

/** Most certificates one `expiring` answer lists; `truncated` says when more expire in the window. */
export const MAX_EXPIRING = 10_000;

/** A live device certificate that expires inside the window asked for. */
export interface ExpiringCertificate {
  group: string;
  deviceId: string;
  object: string | null;
  serial: string;
  notAfter: string;
  rotationRequested: boolean;
}

/**
 * Live (unrevoked) certificates of allow-listed devices expiring before `until`, by group and
 * then by expiry (soonest first). Superseded and revoked certificates are not listed: a
 * renewal that the device reported leaves only the new certificate live.
 */
export async function expiringCertificates(
  db: Db,
  factoryId: number,
  until: Date,
): Promise<{ certificates: ExpiringCertificate[]; truncated: boolean }> {
  const rows = await db
    .selectFrom('certificates')
    .innerJoin('devices', 'devices.id', 'certificates.device_row_id')
    .innerJoin('device_groups', 'device_groups.id', 'devices.group_id')
    .leftJoin('secure_objects', 'secure_objects.id', 'certificates.secure_object_id')
    .select([
      'device_groups.name as group',
      'devices.device_id',
      'secure_objects.name as object',
      'certificates.serial_hex',
      'certificates.not_after',
      'certificates.rotation_requested_at',
    ])
    .where('certificates.factory_id', '=', factoryId)
    .where('certificates.revoked_at', 'is', null)
    .where('devices.deleted_at', 'is', null)
    .where('certificates.not_after', '<', until.toISOString())
    .orderBy('device_groups.name')
    .orderBy('certificates.not_after')
    .orderBy('certificates.id')
    .limit(MAX_EXPIRING + 1)
    .execute();
  return {
    certificates: rows.slice(0, MAX_EXPIRING).map((r) => ({
      group: r.group,
      deviceId: r.device_id,
      object: r.object,
      serial: r.serial_hex,
      notAfter: r.not_after,
      rotationRequested: r.rotation_requested_at !== null,
    })),
    truncated: rows.length > MAX_EXPIRING,
  };
}

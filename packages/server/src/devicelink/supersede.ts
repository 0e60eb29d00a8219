import { compiledOnce } from '../storage/compiled-query.ts';
import type { Db } from '../storage/database.ts';

/** A live certificate that a newer one of the same object replaces. */
export interface SupersededCertificate {
  id: number;
  serial_hex: string;
  ca_id: number;
}

/** Revokes certificates as `superseded` (RFC 5280 reason); the caller re-signs their CAs' CRLs after commit. */
export async function revokeAsSuperseded(
  db: Db,
  certificates: readonly SupersededCertificate[],
  now: Date,
): Promise<void> {
  if (certificates.length === 0) return;
  await db
    .updateTable('certificates')
    .set({ revoked_at: now.toISOString(), revocation_reason: 'superseded' })
    .where(
      'id',
      'in',
      certificates.map((c) => c.id),
    )
    .execute();
}

const liveOfObject = compiledOnce((db, [deviceRowId, secureObjectId]: [number, number]) =>
  db
    .selectFrom('certificates')
    .select(['id', 'serial_hex', 'ca_id'])
    .where('device_row_id', '=', deviceRowId)
    .where('secure_object_id', '=', secureObjectId)
    .where('revoked_at', 'is', null)
    .orderBy('id', 'desc'),
);

/**
 * What ends a rotation once the device reported the new certificate stored: every live
 * certificate of the object except the newest, which the caller revokes (revokeAsSuperseded).
 */
export async function supersededByNewest(
  db: Db,
  deviceRowId: number,
  secureObjectId: number,
): Promise<SupersededCertificate[]> {
  const [, ...older] = (await liveOfObject(db, deviceRowId, secureObjectId)).rows;
  return older;
}

import { fromPem, type ParsedCertificate } from '@keyferry/core';
import type { Db } from '../storage/database.ts';

/** Whether keyferry issued a certificate, and whether it is revoked. */
export type CertificateStatus =
  | { state: 'good' }
  | { state: 'revoked'; at: string; reason: string | null }
  | { state: 'unknown' };

/**
 * The status of a certificate from the rows the CRLs are built from (`certificates`): found by
 * factory and serial, then compared byte for byte, so a certificate issued under a CA key
 * that config-device-gateway has since replaced is still found (and still revocable).
 */
export async function certificateStatus(
  db: Db,
  factoryId: number,
  cert: ParsedCertificate,
): Promise<CertificateStatus> {
  const rows = await db
    .selectFrom('certificates')
    .select(['pem', 'revoked_at', 'revocation_reason'])
    .where('factory_id', '=', factoryId)
    .where('serial_hex', '=', cert.serialHex)
    .execute();
  const row = rows.find((r) => Buffer.from(fromPem(r.pem, 'CERTIFICATE')).equals(cert.der));
  if (!row) return { state: 'unknown' };
  if (row.revoked_at !== null) return { state: 'revoked', at: row.revoked_at, reason: row.revocation_reason };
  return { state: 'good' };
}

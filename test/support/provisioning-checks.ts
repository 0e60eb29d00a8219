import { createHash } from 'node:crypto';
import { stateRank } from '../../packages/server/src/allowlist/device-state.ts';
import type { Db } from '../../packages/server/src/storage/database.ts';

/** What a run that provisioned devices must leave behind, counted from the database. */
export interface ProvisioningCounts {
  /** Devices on the allow-list. */
  readonly devices: number;
  /** Of those, PROVISIONING_COMPLETED. */
  readonly completed: number;
  /** Device objects holding more than one certificate that is not revoked. */
  readonly duplicateLiveCerts: number;
  /** Certificates issued without the `device-link.enroll` audit row that names their serial. */
  readonly auditGaps: number;
  /** Certificates in the database. */
  readonly certificates: number;
}

export async function completedDevices(db: Db): Promise<number> {
  const row = await db
    .selectFrom('devices')
    .select((eb) => eb.fn.countAll().as('n'))
    .where('state_rank', '=', stateRank('PROVISIONING_COMPLETED'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

export async function provisioningCounts(db: Db): Promise<ProvisioningCounts> {
  const devices = Number(
    (
      await db
        .selectFrom('devices')
        .select((eb) => eb.fn.countAll().as('n'))
        .executeTakeFirstOrThrow()
    ).n,
  );
  // no object of a device holds two certificates that are both unrevoked
  const doubled = await db
    .selectFrom('certificates')
    .select(['device_row_id', 'secure_object_id', (eb) => eb.fn.countAll().as('n')])
    .where('revoked_at', 'is', null)
    .groupBy(['device_row_id', 'secure_object_id'])
    .having((eb) => eb.fn.countAll(), '>', 1)
    .execute();
  // no gap in the audit log: every certificate issued has the enrollment row naming its serial
  const issued = await db.selectFrom('certificates').select('serial_hex').execute();
  const audited = new Set(
    (await db.selectFrom('audit_log').select('detail').where('action', '=', 'device-link.enroll').execute())
      .map((r) => JSON.parse(r.detail) as { serial?: string; reused?: boolean })
      .filter((d) => d.reused === false)
      .map((d) => d.serial),
  );
  return {
    devices,
    completed: await completedDevices(db),
    duplicateLiveCerts: doubled.length,
    auditGaps: issued.filter((c) => !audited.has(c.serial_hex)).length,
    certificates: issued.length,
  };
}

/** A digest of every key held in custody (CA keys included): it must not change across crashes. */
export async function custodyDigest(db: Db): Promise<string> {
  const rows = await db
    .selectFrom('custody_keys')
    .select(['id', 'backend', 'purpose', 'public_key', 'material'])
    .orderBy('id')
    .execute();
  return createHash('sha256').update(JSON.stringify(rows)).digest('hex');
}

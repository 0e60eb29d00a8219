import type { Kysely } from 'kysely';

/**
 * Fleet-triggered rotation (issue 15 §4): when an operator marked a device's live certificate
 * for rotation. The manifest then says `rotate: true` for its object until the device reports
 * a newer certificate, which supersedes (revokes) the marked one.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('certificates').addColumn('rotation_requested_at', 'text').execute();
}

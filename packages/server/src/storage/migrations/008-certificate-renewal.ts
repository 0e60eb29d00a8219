import type { Kysely } from 'kysely';

/**
 * Per-object renewal (issue 15 §2): the validity of a renewed certificate and the window
 * before expiry in which devices renew. NULL means the defaults (devicelink/renewal-policy.ts).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('secure_objects').addColumn('renewal_validity_days', 'integer').execute();
  await db.schema.alterTable('secure_objects').addColumn('renewal_window_days', 'integer').execute();
}

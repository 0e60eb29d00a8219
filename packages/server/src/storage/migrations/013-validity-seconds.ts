import type { Kysely } from 'kysely';

/**
 * Certificate validity and renewal finer than a day (short-lived certificates): when set,
 * each wins over its day column of migration 008 and `validity_days`. NULL means the day
 * column (or its default) applies.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  for (const column of ['validity_seconds', 'renewal_validity_seconds', 'renewal_window_seconds']) {
    await db.schema.alterTable('secure_objects').addColumn(column, 'integer').execute();
  }
}

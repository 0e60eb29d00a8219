import type { Kysely } from 'kysely';

/**
 * Counted audit entries: repeated refusals of one caller for one reason within one minute
 * share a row (`aggregate_key`, unique; NULL for every other entry, and NULLs never collide)
 * whose `count` grows, instead of one row each. `at` is indexed for the retention prune.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('audit_log')
    .addColumn('count', 'integer', (c) => c.notNull().defaultTo(1))
    .execute();
  await db.schema.alterTable('audit_log').addColumn('aggregate_key', 'text').execute();
  await db.schema
    .createIndex('audit_log_aggregate_key')
    .unique()
    .on('audit_log')
    .column('aggregate_key')
    .execute();
  await db.schema.createIndex('audit_log_at').on('audit_log').column('at').execute();
}

import { type Kysely, sql } from 'kysely';

/**
 * Bulk jobs become rows any keyferryd on the database may claim: who asked for the job (so
 * another node can record the change under the same actor and correlation id) and the lease
 * of the node running it (`lease_owner`, `lease_until`), so a job of a node that died is
 * claimed again once its lease runs out. Jobs left `running` by a release before this had no
 * lease; they get one that has already expired, so the next node to look resumes them.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('bulk_jobs')
    .addColumn('actor', 'text', (c) => c.notNull().defaultTo(''))
    .execute();
  await db.schema
    .alterTable('bulk_jobs')
    .addColumn('correlation_id', 'text', (c) => c.notNull().defaultTo(''))
    .execute();
  await db.schema.alterTable('bulk_jobs').addColumn('lease_owner', 'text').execute();
  await db.schema.alterTable('bulk_jobs').addColumn('lease_until', 'text').execute();
  await sql`UPDATE bulk_jobs SET lease_until = created_at WHERE status = 'running'`.execute(db);
  await db.schema.createIndex('bulk_jobs_claim').on('bulk_jobs').columns(['status', 'created_at']).execute();
}

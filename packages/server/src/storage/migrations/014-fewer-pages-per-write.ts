import { type Kysely, sql } from 'kysely';
import type { MigrationContext } from '../migrate.ts';

/**
 * Fewer index pages written by each device-link transaction (docs/performance.md): a SQLite
 * commit costs ~10 µs per page it writes to the WAL, and every device writes three.
 * - `audit_log_aggregate_key` holds only the counted entries (partial, `IS NOT NULL`): every
 *   other audit row used to add a NULL entry to it. Counted upserts name the same condition.
 * - SQLite: `device_objects` becomes a WITHOUT ROWID table clustered on its primary key, one
 *   B-tree instead of the table and its key's index. PostgreSQL has no such form: unchanged.
 */
export async function up(db: Kysely<unknown>, ctx: MigrationContext): Promise<void> {
  await db.schema.dropIndex('audit_log_aggregate_key').execute();
  await db.schema
    .createIndex('audit_log_aggregate_key')
    .unique()
    .on('audit_log')
    .column('aggregate_key')
    .where(sql.ref('aggregate_key'), 'is not', null)
    .execute();
  if (ctx.dialect !== 'sqlite') return;
  await db.schema
    .createTable('device_objects_clustered')
    .addColumn('device_row_id', 'integer', (c) => c.notNull().references('devices.id'))
    .addColumn('secure_object_id', 'integer', (c) => c.notNull().references('secure_objects.id'))
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('reason', 'text')
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('device_objects_pk', ['device_row_id', 'secure_object_id'])
    .modifyEnd(sql`without rowid`)
    .execute();
  await sql`insert into device_objects_clustered (device_row_id, secure_object_id, state, reason, updated_at)
    select device_row_id, secure_object_id, state, reason, updated_at from device_objects`.execute(db);
  await db.schema.dropTable('device_objects').execute();
  await db.schema.alterTable('device_objects_clustered').renameTo('device_objects').execute();
}

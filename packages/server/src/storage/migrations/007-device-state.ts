import { type Kysely, sql } from 'kysely';

/**
 * Each device's provisioning state as one value kept on its row (`state_rank`, an index into
 * DEVICE_STATES in allowlist/device-state.ts, and `state_at`, when it last changed), so the
 * console counts, charts and filters a 50,000-device fleet through indexes instead of
 * aggregating device_objects on every page. Existing rows are computed once here; the
 * ranking is written out (not imported) so this migration stays as it was released.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('devices')
    .addColumn('state_rank', 'integer', (c) => c.notNull().defaultTo(2))
    .execute();
  await db.schema.alterTable('devices').addColumn('state_at', 'text').execute();
  await sql`UPDATE devices SET
    state_rank = COALESCE((SELECT MIN(CASE device_objects.state
        WHEN 'GENERATION_FAILED' THEN 0 WHEN 'PROVISIONING_FAILED' THEN 1
        WHEN 'GENERATION_ON_CONNECTION' THEN 2 WHEN 'GENERATION_TRIGGERED' THEN 3
        WHEN 'GENERATION_COMPLETED' THEN 4 WHEN 'PROVISIONING_COMPLETED' THEN 5 END)
      FROM device_objects WHERE device_objects.device_row_id = devices.id), 2),
    state_at = (SELECT MAX(device_objects.updated_at) FROM device_objects
      WHERE device_objects.device_row_id = devices.id)`.execute(db);
  await db.schema
    .createIndex('devices_factory_state')
    .on('devices')
    .columns(['factory_id', 'state_rank', 'state_at'])
    .execute();
  await db.schema
    .createIndex('devices_factory_state_page')
    .on('devices')
    .columns(['factory_id', 'state_rank', 'id'])
    .execute();
}

import { sql } from 'kysely';
import { describe, expect, it, onTestFinished } from 'vitest';
import { recordAudit, recordCountedAudit } from '../../src/audit/audit-log.ts';
import { BACKENDS, databaseBefore, freshDatabase } from '../support/databases.ts';

const at = '2026-12-02T10:00:00.000Z';

describe('migration 014 (fewer pages per write)', () => {
  it('keeps every device_objects row of an existing SQLite database and clusters the table on its key', async () => {
    const before = await databaseBefore('sqlite', '014');
    onTestFinished(() => before.dispose());
    const old = before.db;
    const factory = await old
      .insertInto('factories')
      .values({ name: 'f', repo_id: 'r', subdomain: 's', created_at: at })
      .returning('id')
      .executeTakeFirstOrThrow();
    const group = await old
      .insertInto('device_groups')
      .values({
        factory_id: factory.id,
        nc12: '935389312472',
        name: 'fio-935389312472',
        production: 0,
        created_at: at,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    const objects = [];
    for (const [name, objectId] of [
      ['kp', '83000042'],
      ['ca', '83000043'],
    ] as const) {
      objects.push(
        await old
          .insertInto('secure_objects')
          .values({
            factory_id: factory.id,
            name,
            type: name === 'kp' ? 'KEYPAIR' : 'CERTIFICATE',
            object_id: objectId,
            ca_id: null,
            keypair_id: null,
            validity_days: null,
            renewal_validity_days: null,
            renewal_window_days: null,
            validity_seconds: null,
            renewal_validity_seconds: null,
            renewal_window_seconds: null,
            created_at: at,
          })
          .returning('id')
          .executeTakeFirstOrThrow(),
      );
    }
    const rows = [];
    for (let d = 0; d < 3; d++) {
      const device = await old
        .insertInto('devices')
        .values({
          factory_id: factory.id,
          device_id: `4${d}`.padEnd(42, '0'),
          group_id: group.id,
          nc12: '935389312472',
          added_at: at,
          deleted_at: null,
          last_connection: null,
        })
        .returning('id')
        .executeTakeFirstOrThrow();
      for (const o of objects) {
        rows.push({
          device_row_id: device.id,
          secure_object_id: o.id,
          state: d === 2 ? 'GENERATION_FAILED' : 'GENERATION_TRIGGERED',
          reason: d === 2 ? 'the SE said no' : null,
          updated_at: at,
        } as const);
      }
    }
    await old.insertInto('device_objects').values(rows).execute();
    const database = await before.open();
    const after = await database.db
      .selectFrom('device_objects')
      .selectAll()
      .orderBy('device_row_id')
      .orderBy('secure_object_id')
      .execute();
    expect(after).toEqual(rows);
    const table = await sql<{
      sql: string;
    }>`select sql from sqlite_master where name = 'device_objects'`.execute(database.db);
    expect(table.rows[0]!.sql.toLowerCase()).toContain('without rowid');
    // the key still refuses a second row for one device and object
    await expect(database.db.insertInto('device_objects').values(rows[0]!).execute()).rejects.toThrow(
      /UNIQUE constraint failed/,
    );
  });

  it.each(BACKENDS)(
    'on %s, only counted audit entries are in the aggregate-key index, and they still count',
    async (backend) => {
      const database = await freshDatabase(backend);
      try {
        const { db } = database;
        const definition =
          backend === 'sqlite'
            ? (
                await sql<{
                  d: string;
                }>`select sql as d from sqlite_master where name = 'audit_log_aggregate_key'`.execute(db)
              ).rows[0]!.d
            : (
                await sql<{
                  d: string;
                }>`select indexdef as d from pg_indexes where indexname = 'audit_log_aggregate_key'`.execute(
                  db,
                )
              ).rows[0]!.d;
        expect(definition.toLowerCase()).toMatch(/where .*aggregate_key.* is not null/);
        const entry = {
          factoryId: null,
          actor: 'device:1',
          action: 'device-link.refused',
          object: 'path:/x',
          detail: { code: 'c' },
          correlationId: 'id',
        };
        const now = new Date(at);
        for (let i = 0; i < 3; i++) await recordCountedAudit(db, entry, 'key', now);
        for (let i = 0; i < 2; i++) await recordAudit(db, { ...entry, action: 'device-link.manifest' }, now);
        const rows = await db
          .selectFrom('audit_log')
          .select(['action', 'count', 'aggregate_key'])
          .orderBy('id')
          .execute();
        expect(rows).toEqual([
          { action: 'device-link.refused', count: 3, aggregate_key: '2026-12-02T10:00 key' },
          { action: 'device-link.manifest', count: 1, aggregate_key: null },
          { action: 'device-link.manifest', count: 1, aggregate_key: null },
        ]);
      } finally {
        await database.dispose();
      }
    },
  );
});

import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertFactory } from '../../src/factories/factories.ts';
import { migrate } from '../../src/storage/migrate.ts';
import { BACKENDS, freshDatabase } from '../support/databases.ts';

/** A database from before migration 004: several open requests of one CA, each with its own key. */
describe.each(BACKENDS)('migration 004 (one open CA request) on %s', (backend) => {
  let database: Awaited<ReturnType<typeof freshDatabase>>;
  beforeAll(async () => {
    database = await freshDatabase(backend);
  });
  afterAll(async () => {
    await database.dispose();
  });

  it('keeps the newest open request of each CA, drops the others with their keys, then allows one open request', async () => {
    const db = database.db;
    await sql`drop index ca_requests_one_open`.execute(db);
    await db
      .deleteFrom('keyferry_migrations' as never)
      .where('name' as never, '=', '005-one-open-ca-request' as never)
      .execute();
    const factory = await insertFactory(db, 'mig', new Date());
    const at = new Date().toISOString();
    const request = async (key: string, ca: string, completed: string | null) => {
      await db
        .insertInto('custody_keys')
        .values({
          id: key,
          backend: 'soft',
          purpose: `intermediate-ca:mig:${ca}`,
          public_key: '',
          material: '',
          created_at: at,
        })
        .execute();
      const row = await db
        .insertInto('ca_requests')
        .values({
          factory_id: factory.id,
          ca_name: ca,
          key_ref: key,
          csr: key,
          created_at: at,
          completed_at: completed,
        })
        .returning('id')
        .executeTakeFirstOrThrow();
      return row.id;
    };
    const done = await request('k-done', 'gw', at);
    await request('k-old1', 'gw', null);
    await request('k-old2', 'gw', null);
    const newest = await request('k-new', 'gw', null);
    const other = await request('k-other', 'aws', null);

    expect(await migrate(db as never, backend)).toEqual(['005-one-open-ca-request']);
    const left = await db.selectFrom('ca_requests').select(['id', 'key_ref']).orderBy('id').execute();
    expect(left).toEqual([
      { id: done, key_ref: 'k-done' },
      { id: newest, key_ref: 'k-new' },
      { id: other, key_ref: 'k-other' },
    ]);
    const keys = await db
      .selectFrom('custody_keys')
      .select('id')
      .where('id', 'like', 'k-%')
      .orderBy('id')
      .execute();
    expect(keys.map((k) => k.id)).toEqual(['k-done', 'k-new', 'k-other']);
    await expect(request('k-second', 'gw', null)).rejects.toThrow(/unique|UNIQUE/);
  });
});

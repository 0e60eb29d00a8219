import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listAudit, recordAudit } from '../../src/audit/audit-log.ts';
import { insertFactory } from '../../src/factories/factories.ts';
import { compiledOnce } from '../../src/storage/compiled-query.ts';
import { BACKENDS, freshDatabase } from '../support/databases.ts';

describe.each(BACKENDS)('queries compiled once on %s', (backend) => {
  let database: Awaited<ReturnType<typeof freshDatabase>>;
  beforeAll(async () => {
    database = await freshDatabase(backend);
  });
  afterAll(async () => {
    await database.dispose();
  });

  it('builds a query once and runs it with each call’s parameters, nulls included', async () => {
    let builds = 0;
    const byName = compiledOnce((db, [name]: [string]) => {
      builds++;
      return db.selectFrom('factories').select(['id', 'name']).where('name', '=', name);
    });
    const a = await insertFactory(database.db, 'compiled-a', new Date());
    const b = await insertFactory(database.db, 'compiled-b', new Date());
    expect((await byName(database.db, 'compiled-a')).rows).toEqual([{ id: a.id, name: 'compiled-a' }]);
    expect((await byName(database.db, 'compiled-b')).rows).toEqual([{ id: b.id, name: 'compiled-b' }]);
    expect((await byName(database.db, 'compiled-none')).rows).toEqual([]);
    expect(builds).toBe(1);
    // the audit log's insert is one: a null factory and each entry's own values land in their columns
    await recordAudit(database.db, {
      factoryId: a.id,
      actor: 'system',
      action: 'x.one',
      object: 'o:1',
      detail: { n: 1 },
      correlationId: 'c1',
    });
    await recordAudit(database.db, {
      factoryId: null,
      actor: 'system',
      action: 'x.two',
      object: 'o:2',
      correlationId: 'c2',
    });
    const listed = await listAudit(database.db, a.id, { limit: 10 });
    expect(listed.map((e) => [e.action, e.object, e.detail, e.correlationId])).toEqual([
      ['x.one', 'o:1', { n: 1 }, 'c1'],
    ]);
  });

  it('runs inside a transaction on its connection: a rollback undoes it', async () => {
    const rename = compiledOnce((db, [name, id]: [string, number]) =>
      db.updateTable('factories').set({ name }).where('id', '=', id),
    );
    const f = await insertFactory(database.db, 'compiled-tx', new Date());
    await expect(
      database.db.transaction().execute(async (trx) => {
        expect(Number((await rename(trx, 'compiled-renamed', f.id)).numAffectedRows)).toBe(1);
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    const row = await database.db
      .selectFrom('factories')
      .select('name')
      .where('id', '=', f.id)
      .executeTakeFirst();
    expect(row?.name).toBe('compiled-tx');
  });
});

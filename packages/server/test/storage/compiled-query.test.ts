import { tmpdir } from 'node:os';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createDatabase } from '../../../../test/support/postgres.ts';
import { listAudit, recordAudit } from '../../src/audit/audit-log.ts';
import { insertFactory } from '../../src/factories/factories.ts';
import { compiledOnce } from '../../src/storage/compiled-query.ts';
import { openDatabase } from '../../src/storage/database.ts';
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

describe('queries compiled once, on PostgreSQL: named prepared statements', () => {
  let database: Awaited<ReturnType<typeof openDatabase>>;
  beforeAll(async () => {
    const url = await createDatabase(inject('postgresUrl'), `named_${process.pid}_${Date.now()}`);
    // one connection, so the statements prepared are those of the connection the test asks
    database = await openDatabase({ kind: 'postgres', url, poolSize: 1 }, tmpdir());
  });
  afterAll(async () => {
    await database?.close();
  });

  async function prepared(): Promise<Map<string, string>> {
    const { rows } = await sql<{ name: string; statement: string }>`
      select name, statement from pg_prepared_statements`.execute(database.db);
    return new Map(rows.map((r) => [r.statement, r.name]));
  }

  it('prepares a compiled query once per connection, by name, and runs it with each call’s values', async () => {
    const bySubdomain = compiledOnce((db, [sub]: [string]) =>
      db.selectFrom('factories').select(['name']).where('subdomain', '=', sub),
    );
    const a = await insertFactory(database.db, 'named-a', new Date());
    const b = await insertFactory(database.db, 'named-b', new Date());
    expect((await bySubdomain(database.db, a.subdomain)).rows).toEqual([{ name: 'named-a' }]);
    const text = database.db
      .selectFrom('factories')
      .select(['name'])
      .where('subdomain', '=', '')
      .compile().sql;
    const name = (await prepared()).get(text);
    expect(name).toMatch(/^kf\d+$/);
    // the second call runs the same prepared statement with its own value
    expect((await bySubdomain(database.db, b.subdomain)).rows).toEqual([{ name: 'named-b' }]);
    expect((await prepared()).get(text)).toBe(name);
    // a query built on each call (not compiled once) is not kept on the connection
    await database.db.selectFrom('factories').select('id').where('name', '=', 'named-b').execute();
    expect([...(await prepared()).keys()].every((s) => !s.includes('"name" = $1'))).toBe(true);
  });

  it('a refused statement leaves the named statement usable (a unique violation, then a good insert)', async () => {
    const insertGroupless = compiledOnce((db, [name, repo, sub]: [string, string, string]) =>
      db
        .insertInto('factories')
        .values({ name, repo_id: repo, subdomain: sub, created_at: new Date(0).toISOString() }),
    );
    await insertGroupless(database.db, 'named-c', 'repo-c', 'subc');
    await expect(insertGroupless(database.db, 'named-c', 'repo-c2', 'subc2')).rejects.toThrow(
      /unique|duplicate/i,
    );
    await insertGroupless(database.db, 'named-d', 'repo-d', 'subd');
    const rows = await database.db
      .selectFrom('factories')
      .select('name')
      .where('name', 'like', 'named-%')
      .execute();
    expect(rows.map((r) => r.name).sort()).toEqual(['named-a', 'named-b', 'named-c', 'named-d']);
  });
});

import SqliteDatabase from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import { describe, expect, it } from 'vitest';
import { withStatementCache } from '../../src/storage/statement-cache.ts';

/** A real in-memory SQLite whose prepare() calls are counted. */
function counted() {
  const sqlite = new SqliteDatabase(':memory:');
  const prepared: string[] = [];
  const prepare = sqlite.prepare.bind(sqlite);
  sqlite.prepare = ((text: string) => {
    prepared.push(text);
    return prepare(text);
  }) as typeof sqlite.prepare;
  sqlite.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
  return { sqlite, prepared };
}

describe('SQLite statement cache (Kysely prepared every query again)', () => {
  it('prepares each SQL text once for Kysely queries, whatever the parameters', async () => {
    const { sqlite, prepared } = counted();
    const db = new Kysely<{ t: { id: number; v: string } }>({
      dialect: new SqliteDialect({ database: withStatementCache(sqlite) }),
    });
    for (let i = 0; i < 5; i++)
      await db
        .insertInto('t')
        .values({ id: i, v: `v${i}` })
        .execute();
    for (let i = 0; i < 5; i++) {
      const row = await db.selectFrom('t').select('v').where('id', '=', i).executeTakeFirstOrThrow();
      expect(row.v).toBe(`v${i}`);
    }
    expect(prepared).toHaveLength(2);
    await db.destroy();
  });

  it('keeps at most its size, least recently used out', () => {
    const { sqlite, prepared } = counted();
    const cache = withStatementCache(sqlite, 2);
    cache.prepare('SELECT 1');
    cache.prepare('SELECT 2');
    cache.prepare('SELECT 1'); // now the most recent
    cache.prepare('SELECT 3'); // evicts SELECT 2
    cache.prepare('SELECT 1');
    cache.prepare('SELECT 2');
    expect(prepared).toEqual(['SELECT 1', 'SELECT 2', 'SELECT 3', 'SELECT 2']);
  });

  it('gives no shared statement while one is iterating (a streamed query)', () => {
    const { sqlite } = counted();
    sqlite.exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')");
    const cache = withStatementCache(sqlite);
    const text = 'SELECT v FROM t ORDER BY id';
    const seen: string[] = [];
    for (const row of cache.prepare(text).iterate([]) as Iterable<{ v: string }>) {
      // the same SQL while the first is busy: must not throw "This statement is busy executing a query"
      seen.push(row.v, ...(cache.prepare(text).all([]) as { v: string }[]).map((r) => r.v.toUpperCase()));
    }
    expect(seen).toEqual(['a', 'A', 'B', 'b', 'A', 'B']);
  });
});

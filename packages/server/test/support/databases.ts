import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { CompiledQuery, Kysely, PostgresDialect, SqliteDialect, sql } from 'kysely';
import pg from 'pg';
import { inject } from 'vitest';
import { createDatabase } from '../../../../test/support/postgres.ts';
import { type Database, type Db, openDatabase } from '../../src/storage/database.ts';
import { MIGRATIONS } from '../../src/storage/migrate.ts';
import type { Tables } from '../../src/storage/tables.ts';

export type BackendName = 'sqlite' | 'postgres';
export const BACKENDS: readonly BackendName[] = ['sqlite', 'postgres'];

let counter = 0;

/** A fresh, migrated database of either backend; PostgreSQL gets its own database in the test cluster. */
export async function freshDatabase(backend: BackendName): Promise<Database & { dispose(): Promise<void> }> {
  if (backend === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'keyferry-sqlite-'));
    const database = await openDatabase({ kind: 'sqlite', path: join(dir, 'keyferry.db') }, dir);
    return {
      ...database,
      async dispose() {
        await database.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const name = `t_${process.pid}_${Date.now()}_${counter++}`;
  const url = await createDatabase(inject('postgresUrl'), name);
  const database = await openDatabase({ kind: 'postgres', url, poolSize: 5 }, tmpdir());
  return { ...database, dispose: () => database.close() };
}

/**
 * A fresh database of either backend with only the migrations before `first` applied, as a
 * keyferryd of an earlier release left it: `db` to fill it, then `open()` closes `db` and opens
 * the database as keyferryd does (which applies the rest). `dispose()` closes both and removes it.
 */
export async function databaseBefore(
  backend: BackendName,
  first: string,
): Promise<{ db: Db; open(): Promise<Database>; dispose(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'keyferry-before-'));
  const path = join(dir, 'keyferry.db');
  const url =
    backend === 'postgres'
      ? await createDatabase(inject('postgresUrl'), `b_${process.pid}_${Date.now()}_${counter++}`)
      : '';
  const sqliteDialect = () => {
    const sqlite = new SqliteDatabase(path);
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('foreign_keys = ON');
    return new SqliteDialect({ database: sqlite });
  };
  const db = new Kysely<Tables>({
    dialect:
      backend === 'sqlite'
        ? sqliteDialect()
        : new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 2 }) }),
  });
  await sql`create table keyferry_migrations (name text primary key, applied_at text not null)`.execute(db);
  for (const m of MIGRATIONS.filter((m) => m.name < first)) {
    await db.transaction().execute(async (trx) => {
      await m.up(trx as unknown as Kysely<unknown>, {
        dialect: backend,
        serial: backend === 'sqlite' ? 'integer' : 'serial',
      });
      await sql`insert into keyferry_migrations (name, applied_at) values (${m.name}, ${new Date().toISOString()})`.execute(
        trx,
      );
    });
  }
  const opened: Database[] = [];
  let closed = false;
  const close = async () => {
    if (!closed) await db.destroy();
    closed = true;
  };
  return {
    db,
    async open() {
      await close(); // the earlier release stopped
      const database = await openDatabase(
        backend === 'sqlite' ? { kind: 'sqlite', path } : { kind: 'postgres', url, poolSize: 2 },
        dir,
      );
      opened.push(database);
      return database;
    },
    async dispose() {
      await close();
      for (const database of opened) await database.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The plan the backend chooses for a built query, one line per step: SQLite's `EXPLAIN QUERY
 * PLAN` details, PostgreSQL's `EXPLAIN` text (with the query's own parameters).
 */
export async function queryPlan(db: Db, query: CompiledQuery, backend: BackendName): Promise<string[]> {
  const explain = backend === 'sqlite' ? 'EXPLAIN QUERY PLAN' : 'EXPLAIN';
  const { rows } = await db.executeQuery<Record<string, unknown>>(
    CompiledQuery.raw(`${explain} ${query.sql}`, [...query.parameters]),
  );
  return rows.map((r) => String(r.detail ?? r['QUERY PLAN']));
}

/**
 * PostgreSQL: until `n` backends of `db`'s database wait for a lock (a write blocked on a row
 * another transaction holds), at most ~10 s.
 */
export async function untilWaitingOnALock(db: Db, n = 1): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM pg_stat_activity
      WHERE datname = current_database() AND wait_event_type = 'Lock'`.execute(db);
    if (Number(rows[0]?.n) >= n) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${n} backends never waited for a lock at once`);
}

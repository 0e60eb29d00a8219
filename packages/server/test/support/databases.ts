import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CompiledQuery, sql } from 'kysely';
import { inject } from 'vitest';
import { createDatabase } from '../../../../test/support/postgres.ts';
import { type Database, type Db, openDatabase } from '../../src/storage/database.ts';

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
 * PostgreSQL: until a backend of `db`'s database waits for a lock (a write blocked on a row
 * another transaction holds), at most ~10 s.
 */
export async function untilWaitingOnALock(db: Db): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM pg_stat_activity
      WHERE datname = current_database() AND wait_event_type = 'Lock'`.execute(db);
    if (Number(rows[0]?.n) > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('no backend ever waited for a lock');
}

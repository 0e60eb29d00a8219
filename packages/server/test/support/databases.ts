import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CompiledQuery } from 'kysely';
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

import type BetterSqlite3 from 'better-sqlite3';
import type { SqliteDatabase } from 'kysely';
import { countStatement } from './statement-count.ts';

/** Distinct SQL texts kept prepared; the device-link's hot path uses about thirty. */
export const STATEMENT_CACHE_SIZE = 512;

/**
 * The better-sqlite3 database as Kysely's SqliteDialect sees it, with prepared statements
 * kept by SQL text (least recently used out). Kysely prepares every query it runs, and
 * compiling the same statement again cost more than running it on the device-link's path.
 * A statement busy in an iterate() (a streamed query) is not shared: that call gets its own.
 */
export function withStatementCache(
  sqlite: BetterSqlite3.Database,
  size = STATEMENT_CACHE_SIZE,
): SqliteDatabase {
  const cache = new Map<string, BetterSqlite3.Statement>();
  return {
    close: () => sqlite.close(),
    // Kysely prepares each statement it runs (BEGIN and COMMIT too): one call, one statement
    prepare(sql: string) {
      countStatement(sql);
      const cached = cache.get(sql);
      if (cached && !cached.busy) {
        cache.delete(sql);
        cache.set(sql, cached);
        return cached;
      }
      const statement = sqlite.prepare(sql);
      if (cached) return statement;
      cache.set(sql, statement);
      if (cache.size > size) cache.delete(cache.keys().next().value!);
      return statement;
    },
  };
}

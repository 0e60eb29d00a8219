import pg from 'pg';
import { countStatement } from './statement-count.ts';

/**
 * SQL texts of the queries compiled once (compiled-query.ts): a finite set, so naming each as
 * a PostgreSQL prepared statement per connection cannot grow without bound. Dynamic SQL
 * (an `in (…)` list, a bulk insert of N rows) stays unnamed.
 */
const compiledTexts = new Map<string, string>();

/** Records a query text compiled once; PostgreSQL connections then prepare it by name. */
export function registerCompiledText(text: string): void {
  if (!compiledTexts.has(text)) compiledTexts.set(text, `kf${compiledTexts.size}`);
}

/**
 * Makes a pg client count every query it sends (statement-count.ts) and run the compiled-once
 * queries as named prepared statements: the pg
 * client parses each name once per connection and from then on sends only Bind/Execute, so
 * PostgreSQL neither receives the SQL text again nor parses and plans it on every call
 * (unnamed statements are parsed and planned each time). Everything else passes unchanged.
 * A statement prepared on a connection keeps its plan for the connection's life: a node must
 * restart after a migration changes the tables under it (docs/deployment.md).
 *
 * The named query goes to pg as a `Query` built from the text: a config object
 * (`{ name, text, values }`) is copied property by property on every call
 * (`normalizeQueryConfig`), ~4 µs each, on every statement of every device.
 */
export function nameCompiledStatements(client: pg.PoolClient): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  (client as { query: unknown }).query = (...args: unknown[]) => {
    const [text, values] = args;
    countStatement(text);
    const name = typeof text === 'string' && Array.isArray(values) ? compiledTexts.get(text) : undefined;
    if (name === undefined || args.length > 2) return query(...args);
    return new Promise((resolve, reject) => {
      const named = new pg.Query(text as string, values as unknown[], (error, result) => {
        if (!error) return resolve(result);
        // a stack that leads back to the caller, not to the socket's read (as pg's own promise does)
        Error.captureStackTrace(error);
        reject(error);
      });
      (named as unknown as { name: string }).name = name;
      query(named);
    });
  };
}

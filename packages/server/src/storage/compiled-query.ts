import type { Compilable, CompiledQuery, QueryResult } from 'kysely';
import type { Db } from './database.ts';
import { registerCompiledText } from './named-statements.ts';

/** A parameter's place in a query built once; replaced by the caller's value on each run. */
class Slot {
  constructor(readonly index: number) {}
}

/**
 * More than any hot-path query takes (the largest: a 12-row upsert of 5 values each with the
 * time, the device, the audit row's 6 values, an issued certificate's 13 and the enrollment
 * count, device-records.ts writeIssueAndAudit).
 */
const SLOTS = Array.from({ length: 96 }, (_, i) => new Slot(i));

/**
 * A Kysely query built and compiled once per database (dialect) instead of on every call:
 * `build` receives stand-ins for its parameters, which must only be used as values (not in
 * `sql.lit`, not computed on). Building and compiling cost more than running the statement on
 * the device-link's path (docs/performance.md, Where the time goes). Works inside a
 * transaction: the compiled text is the same; the transaction's connection runs it.
 */
export function compiledOnce<P extends unknown[], O>(
  build: (db: Db, params: P) => Compilable<O>,
): (db: Db, ...params: P) => Promise<QueryResult<O>> {
  // keyed by the dialect adapter, which a transaction shares with its database
  const compiled = new WeakMap<object, CompiledQuery<O>>();
  return (db, ...params) => {
    const adapter = db.getExecutor().adapter;
    let query = compiled.get(adapter);
    if (!query) {
      query = build(db, SLOTS as unknown as P).compile();
      compiled.set(adapter, query);
      registerCompiledText(query.sql);
    }
    const parameters = query.parameters.map((v) => (v instanceof Slot ? params[v.index] : v));
    return db.executeQuery<O>({ ...query, parameters });
  };
}

import { KeyferryError } from '@keyferry/core';
import { BurstLog, type ErrorLog, storageServerName } from './storage-full.ts';

/**
 * SQLSTATEs of a PostgreSQL that is going away or not there yet: admin_shutdown (57P01, a
 * shutdown), crash_shutdown (57P02, another backend crashed, e.g. a PANIC on a full disk),
 * cannot_connect_now (57P03, starting up or in recovery) and the connection_exception class
 * (08...).
 */
const GONE = new Set(['57P01', '57P02', '57P03', '08000', '08001', '08003', '08004', '08006']);
/** What the `pg` driver says when the server closes a connection a query was waiting on. */
const TERMINATED = /^Connection terminated( unexpectedly)?$/;

/** A connection to the database that could not be opened (pool connect): wraps the cause. */
export class DatabaseConnectError extends Error {
  constructor(cause: unknown) {
    super(`cannot connect to the database: ${cause instanceof Error ? cause.message : String(cause)}`, {
      cause,
    });
    this.name = 'DatabaseConnectError';
  }
}

/** Why `err` (or an error it wraps) failed, when the reason is a database that is not there. */
export function databaseUnreachableCause(err: unknown): { code: string; message: string } | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (e instanceof DatabaseConnectError) {
      const cause = e.cause as NodeJS.ErrnoException | undefined;
      return { code: cause?.code ?? 'connect', message: cause?.message ?? e.message };
    }
    if (code !== undefined && GONE.has(code)) return { code, message: e.message };
    if (code === undefined && TERMINATED.test(e.message)) return { code: 'terminated', message: e.message };
  }
  return undefined;
}

/**
 * The refusal of a request while the PostgreSQL server is down, restarting or unreachable:
 * 503 `unavailable`, shown to the client (a retry succeeds once the database is back: the pool
 * opens new connections by itself). Nothing of the request was kept.
 */
export class DatabaseUnreachableError extends KeyferryError {
  readonly reason: { code: string; message: string };
  constructor(reason: { code: string; message: string }, cause: unknown) {
    super(
      'unavailable',
      'keyferryd cannot reach its PostgreSQL database, so it changed nothing: retry later; the operator must bring the database server back (its log says why it stopped; after a full disk, free space on it and start it again): keyferryd reconnects by itself',
      { cause, expose: true },
    );
    this.reason = reason;
  }
}

/** Logs an unreachable database at error once per burst, not a stack per refused request. */
export class DatabaseUnreachableLog extends BurstLog {
  report(log: ErrorLog, error: DatabaseUnreachableError): boolean {
    return this.burst(log, () => {
      const { code, message } = error.reason;
      const database = storageServerName();
      return {
        fields: { code, cause: message, ...(database ? { database } : {}) },
        message: `database not reachable (${code}: ${message}): requests that use it are refused with 503 unavailable; bring the PostgreSQL server${database ? ` (${database})` : ''} back: keyferryd reconnects without a restart`,
      };
    });
  }
}

/** The process's one burst log for an unreachable database. */
export const databaseUnreachableLog = new DatabaseUnreachableLog();

/** `err` as the DatabaseUnreachableError refusal (reported to `log` once a burst), or undefined. */
export function databaseUnreachableError(err: unknown, log?: ErrorLog): DatabaseUnreachableError | undefined {
  const reason = databaseUnreachableCause(err);
  if (!reason) return undefined;
  const error = err instanceof DatabaseUnreachableError ? err : new DatabaseUnreachableError(reason, err);
  if (log) databaseUnreachableLog.report(log, error);
  return error;
}

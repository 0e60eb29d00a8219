import {
  BurstLog,
  DatabaseRefusalError,
  type ErrorLog,
  reportedRefusal,
  storageFileName,
  storageFullError,
  storageServerName,
} from './storage-full.ts';

/**
 * SQLSTATEs of a PostgreSQL that is going away or not there yet: admin_shutdown (57P01, a
 * shutdown), crash_shutdown (57P02, another backend crashed, e.g. a PANIC on a full disk),
 * cannot_connect_now (57P03, starting up or in recovery) and the connection_exception class
 * (08...).
 */
const GONE = new Set(['57P01', '57P02', '57P03', '08000', '08001', '08003', '08004', '08006']);
/** What the `pg` driver says when the server closes a connection a query was waiting on. */
const TERMINATED = /^Connection terminated( unexpectedly)?$/;
/** What pg's pool says when no connection came free within its connectionTimeoutMillis. */
const POOL_WAIT = 'timeout exceeded when trying to connect';
/** PostgreSQL's SQLSTATE lock_not_available: lock_timeout passed waiting for a lock. */
export const PG_LOCK_NOT_AVAILABLE = '55P03';
/** PostgreSQL's SQLSTATE query_canceled: statement_timeout passed (or the statement was cancelled). */
export const PG_QUERY_CANCELED = '57014';

/** A connection to the database that could not be opened (pool connect): wraps the cause. */
export class DatabaseConnectError extends Error {
  constructor(cause: unknown) {
    super(`cannot connect to the database: ${cause instanceof Error ? cause.message : String(cause)}`, {
      cause,
    });
    this.name = 'DatabaseConnectError';
  }
}

/**
 * A statement PostgreSQL did not answer within keyferryd's wait for an answer (database.ts,
 * PG_ANSWER_WAIT_MS), its own statement_timeout passed: a frozen server, a network dropping
 * packets without a reset. keyferryd dropped the connection.
 */
export class DatabaseNoAnswerError extends Error {
  readonly code = 'no_answer';
  constructor(waitedMs: number) {
    super(`no answer from the database within ${waitedMs / 1000} s: keyferryd dropped the connection`);
    this.name = 'DatabaseNoAnswerError';
  }
}

/** Why `err` (or an error it wraps) failed, when the reason is a database that is not there. */
export function databaseUnreachableCause(err: unknown): { code: string; message: string } | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (e instanceof DatabaseConnectError) {
      if (waitedForPool(e)) return undefined;
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
export class DatabaseUnreachableError extends DatabaseRefusalError<{ code: string; message: string }> {
  constructor(reason: { code: string; message: string }, cause: unknown) {
    super(
      reason,
      'keyferryd cannot reach its PostgreSQL database, so it changed nothing: retry later; the operator must bring the database server back (its log says why it stopped; after a full disk, free space on it and start it again): keyferryd reconnects by itself',
      cause,
    );
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
  return reportedRefusal(
    err,
    databaseUnreachableCause(err),
    DatabaseUnreachableError,
    databaseUnreachableLog,
    log,
  );
}

/** A pool connection that did not come free in time: every one was in use (not a server gone). */
function waitedForPool(e: DatabaseConnectError): boolean {
  return e.cause instanceof Error && e.cause.message === POOL_WAIT;
}

/**
 * Why a busy database refused: a PostgreSQL lock it waited for (`lock`), time PostgreSQL took
 * (`slow`), a PostgreSQL that did not answer at all (`silent`), or SQLite's write lock, held by
 * another process past SQLITE_LOCK_WAIT_MS (`sqlite`).
 */
export interface BusyReason {
  code: string;
  message: string;
  kind: 'lock' | 'slow' | 'silent' | 'sqlite';
}

/**
 * Why `err` (or an error it wraps) failed, when the reason is a database too busy to answer
 * within keyferryd's bounds (database.ts): a lock another session held past lock_timeout
 * (55P03), a statement cancelled at statement_timeout (57014), no pool connection free within
 * the pool's wait, or SQLite's write lock held by another connection past its wait
 * (SQLITE_BUSY and its extended codes).
 */
export function databaseBusyCause(err: unknown): BusyReason | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (e instanceof DatabaseConnectError)
      return waitedForPool(e) ? { code: 'pool', message: POOL_WAIT, kind: 'slow' } : undefined;
    if (e instanceof DatabaseNoAnswerError) return { code: e.code, message: e.message, kind: 'silent' };
    if (code === PG_LOCK_NOT_AVAILABLE) return { code, message: e.message, kind: 'lock' };
    if (code === PG_QUERY_CANCELED) return { code, message: e.message, kind: 'slow' };
    if (code?.startsWith('SQLITE_BUSY')) return { code, message: e.message, kind: 'sqlite' };
  }
  return undefined;
}

/** What a busy database's refusal tells the client, by what it waited for. */
const BUSY_REFUSAL: Record<BusyReason['kind'], string> = {
  lock: "keyferryd's PostgreSQL database is busy: another session holds a lock this request needs, so it changed nothing: retry later; the operator should look for the session holding it (pg_stat_activity, pg_locks: e.g. a psql left in a transaction) and end it",
  slow: "keyferryd's PostgreSQL database is busy: it did not answer in time, so this request changed nothing: retry later; the operator should look at what the database is doing (pg_stat_activity: statements running long, sessions holding locks)",
  silent:
    "keyferryd's PostgreSQL database did not answer in time, so keyferryd dropped the connection, which rolls back what this request had begun: retry later (should the database have committed the request's change before it stopped answering, the retry finds it made); the operator should check the database server and the network to it (a frozen host or virtual machine, packets dropped without a reset)",
  sqlite:
    "keyferryd's SQLite database is busy: another process holds its write lock, so this request changed nothing: retry later; the operator should end that process's transaction (e.g. an sqlite3 shell left in one; fuser or lsof on the database file names the processes that have it open)",
};

/**
 * The refusal of a request the database did not serve within keyferryd's bounds: 503
 * `unavailable`, shown to the client (a retry succeeds once the lock is released or the load
 * gone). Nothing of the request was kept: its statement was cancelled and its transaction
 * rolled back; for a server that did not answer at all (`silent`), keyferryd dropped the
 * connection, which rolls it back unless the server had already committed it (its wording
 * says so).
 */
export class DatabaseBusyError extends DatabaseRefusalError<BusyReason> {
  constructor(reason: BusyReason, cause: unknown) {
    super(reason, BUSY_REFUSAL[reason.kind], cause);
  }
}

/** Logs a busy database at error once per burst, not a stack per refused request. */
export class DatabaseBusyLog extends BurstLog {
  report(log: ErrorLog, error: DatabaseBusyError): boolean {
    return this.burst(log, () => {
      const { code, message, kind } = error.reason;
      const database = kind === 'sqlite' ? storageFileName() : storageServerName();
      const on = database ? ` on ${database}` : '';
      const look = {
        lock: `find the session holding the lock${on} (pg_stat_activity, pg_blocking_pids) and end it`,
        slow: `look at what runs${on} (pg_stat_activity: statements running long, sessions holding locks)`,
        silent: `check the PostgreSQL server${on} and the network to it (a frozen host, packets dropped without a reset)`,
        sqlite: `find the process holding the write lock${on} (fuser or lsof on the file; e.g. an sqlite3 shell in a transaction) and end its transaction`,
      }[kind];
      return {
        fields: { code, cause: message, ...(database ? { database } : {}) },
        message: `database busy (${code}: ${message}): requests that wait on it are refused with 503 unavailable; ${look}: keyferryd answers again without a restart`,
      };
    });
  }
}

/** The process's one burst log for a busy database. */
export const databaseBusyLog = new DatabaseBusyLog();

/** `err` as the DatabaseBusyError refusal (reported to `log` once a burst), or undefined. */
export function databaseBusyError(err: unknown, log?: ErrorLog): DatabaseBusyError | undefined {
  return reportedRefusal(err, databaseBusyCause(err), DatabaseBusyError, databaseBusyLog, log);
}

/**
 * `err` as the refusal of a database that cannot serve it now (its storage full, the server
 * not there, or busy past keyferryd's bounds), reported to `log` once a burst; undefined for
 * any other error. What an HTTP request's error handler and the bulk jobs go through.
 */
export function databaseRefusal(
  err: unknown,
  log?: ErrorLog,
): DatabaseRefusalError<{ code: string; message: string }> | undefined {
  return storageFullError(err, log) ?? databaseUnreachableError(err, log) ?? databaseBusyError(err, log);
}

import { KeyferryError } from '@keyferry/core';

/** What filled up: SQLite's code, the errno or PostgreSQL's SQLSTATE, with its message. */
export interface FullCause {
  code: string;
  message: string;
  /**
   * Whose disk is full: keyferryd's own (its SQLite database, a file in its data dir) or the
   * PostgreSQL server's, which an operator frees on the database host, not keyferryd's.
   */
  disk: 'keyferryd' | 'postgres';
}

/** Where a burst is logged: keyferryd's pino logger, or a request's (Fastify's). */
export interface ErrorLog {
  error(fields: object, message: string): void;
}

/** Errno codes of a write refused for want of space (ENOSPC) or quota (EDQUOT). */
const NO_SPACE = new Set(['ENOSPC', 'EDQUOT']);
/** PostgreSQL's SQLSTATE disk_full: a table or index could not grow ("could not extend file"). */
export const PG_DISK_FULL = '53100';

/**
 * Why `err` (or an error it wraps, `cause` after `cause`) failed, when the reason is a full
 * disk: SQLite's SQLITE_FULL ("database or disk is full"), a file write's ENOSPC/EDQUOT, or
 * PostgreSQL's disk_full (SQLSTATE 53100, the `pg` driver's `code`).
 */
export function storageFullCause(err: unknown): FullCause | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'SQLITE_FULL' || (code !== undefined && NO_SPACE.has(code)))
      return { code, message: e.message, disk: 'keyferryd' };
    if (code === PG_DISK_FULL) return { code, message: e.message, disk: 'postgres' };
  }
  return undefined;
}

/**
 * A request the database cannot serve now (its storage full, the server not there, or busy past
 * keyferryd's bounds): 503 `unavailable` with a message shown to the client, saying what is
 * wrong and what to do (a retry succeeds once it is mended), and the `reason` (the code and
 * message of the error under it) for the once-a-burst log. Nothing of the request was kept.
 */
export abstract class DatabaseRefusalError<
  R extends { code: string; message: string },
> extends KeyferryError {
  readonly reason: R;
  constructor(reason: R, message: string, cause: unknown) {
    super('unavailable', message, { cause, expose: true });
    this.reason = reason;
  }
}

/** What a full disk's refusal tells the client, by whose disk it is. */
const REFUSAL: Record<FullCause['disk'], string> = {
  keyferryd:
    "keyferryd's storage is full, so it cannot record this request and changed nothing: retry later; the operator must free space on the disk holding keyferryd's data dir (its database)",
  postgres:
    "the PostgreSQL server's storage is full, so keyferryd cannot record this request and changed nothing: retry later; the operator must free space on the disk holding the PostgreSQL server's data directory (not keyferryd's data dir)",
};

/**
 * The refusal of a request whose write found the server's storage full: 503 `unavailable`,
 * shown to the client (a retry succeeds once an operator frees space), the cause kept for the
 * log. Nothing of the request was kept: its transaction was rolled back whole.
 */
export class StorageFullError extends DatabaseRefusalError<FullCause> {
  constructor(reason: FullCause, cause: unknown) {
    super(reason, REFUSAL[reason.disk], cause);
  }
}

/**
 * `err` as the StorageFullError refusal when it (or an error it wraps) is a full disk, reported
 * to `log` once per burst (storageFullLog); undefined for any other error. What an HTTP
 * request's error handler and a bulk job's failure both go through.
 */
export function storageFullError(err: unknown, log?: ErrorLog): StorageFullError | undefined {
  return reportedRefusal(err, storageFullCause(err), StorageFullError, storageFullLog, log);
}

/**
 * `err` as the refusal `Refusal` makes of `reason` (err itself when it is one already), reported
 * to `log` on `burstLog` once a burst; undefined when there is no reason (err is not one of
 * these). What storageFullError and the database refusals (database-unreachable.ts) share.
 */
export function reportedRefusal<R, E extends KeyferryError>(
  err: unknown,
  reason: R | undefined,
  Refusal: new (reason: R, cause: unknown) => E,
  burstLog: { report(log: ErrorLog, error: E): boolean },
  log?: ErrorLog,
): E | undefined {
  if (reason === undefined) return undefined;
  const error = err instanceof Refusal ? err : new Refusal(reason, err);
  if (log) burstLog.report(log, error);
  return error;
}

/** Refusals in a row closer than this are one burst, logged once. */
export const STORAGE_FULL_QUIET_MS = 60_000;

/**
 * Counts refusals of one kind in bursts: the first refusal after `quietMs` without one begins
 * a burst and is logged, the rest of the burst only counted (its count goes with the next
 * burst's line as `refusedInLastBurst`). `now` is for tests.
 */
export class BurstLog {
  #last = Number.NEGATIVE_INFINITY;
  #refused = 0;
  readonly #now: () => number;
  readonly #quietMs: number;

  constructor(options: { now?: () => number; quietMs?: number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#quietMs = options.quietMs ?? STORAGE_FULL_QUIET_MS;
  }

  /** Logs `line()` at error when this refusal begins a burst; whether it did. */
  protected burst(log: ErrorLog, line: () => { fields: object; message: string }): boolean {
    const now = this.#now();
    const quiet = now - this.#last >= this.#quietMs;
    this.#last = now;
    if (!quiet) {
      this.#refused++;
      return false;
    }
    const before = this.#refused;
    this.#refused = 1;
    const { fields, message } = line();
    log.error({ ...fields, ...(before > 0 ? { refusedInLastBurst: before } : {}) }, message);
    return true;
  }
}

/**
 * Logs a full disk at error level once per burst, not a stack trace per refused request: a
 * factory line keeps retrying, and its refusals must not fill what little space is left with
 * log lines (each refusal still has its info line, like every other refusal).
 */
export class StorageFullLog extends BurstLog {
  /** Whether this refusal began a burst (and so was logged). */
  report(log: ErrorLog, error: StorageFullError): boolean {
    return this.burst(log, () => {
      const { code, message, disk } = error.reason;
      const database = disk === 'postgres' ? storageServer : storageFile;
      const where =
        disk === 'postgres'
          ? `the PostgreSQL server's data directory${storageServer ? ` (${storageServer})` : ''}`
          : (storageFile ?? "keyferryd's data dir");
      return {
        fields: { code, cause: message, ...(database ? { database } : {}) },
        message: `storage full (${code}: ${message}): requests that write are refused with 503 unavailable and reads are answered; free space on the disk holding ${where}: keyferryd writes again without a restart`,
      };
    });
  }
}

/** The process's one burst log (keyferryd runs one database per process). */
export const storageFullLog = new StorageFullLog();

/** The SQLite file keyferryd writes, named by the log line (openDatabase sets it). */
let storageFile: string | undefined;
/** The SQLite file noted by openDatabase; undefined on PostgreSQL or in memory. */
export function storageFileName(): string | undefined {
  return storageFile;
}
export function noteStorageFile(path: string): void {
  storageFile = path;
}

/** The PostgreSQL database keyferryd writes, as host:port/name (never the password). */
let storageServer: string | undefined;
/** The PostgreSQL database noted by openDatabase, as host:port/name; undefined on SQLite. */
export function storageServerName(): string | undefined {
  return storageServer;
}
export function noteStorageServer(url: string): void {
  try {
    const { hostname, port, pathname } = new URL(url);
    storageServer = `${hostname}${port ? `:${port}` : ''}${pathname}`;
  } catch {
    storageServer = undefined;
  }
}

import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import SqliteDatabase from 'better-sqlite3';
import {
  CompiledQuery,
  type DatabaseConnection,
  Kysely,
  PostgresAdapter,
  PostgresDialect,
  type QueryResult,
  SqliteDialect,
  type SqliteDialectConfig,
  SqliteDriver,
  sql,
} from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import { DatabaseConnectError, DatabaseNoAnswerError } from './database-unreachable.ts';
import { type Dialect, migrate } from './migrate.ts';
import { nameCompiledStatements } from './named-statements.ts';
import { withStatementCache } from './statement-cache.ts';
import { noteStorageFile, noteStorageServer } from './storage-full.ts';
import type { Tables } from './tables.ts';
import { ThreadReader } from './thread-reader.ts';
import { FALLBACK_CHECKPOINT_PAGES, startWalCheckpointer } from './wal-checkpointer.ts';

export type Db = Kysely<Tables>;

/** Whether `db` (or a transaction of it) runs on PostgreSQL, for statements only it can merge. */
export function onPostgres(db: Db): boolean {
  return db.getExecutor().adapter instanceof PostgresAdapter;
}

/** keyferry's PostgreSQL sessions: transactions READ COMMITTED (PostgreSQL's default). */
const READ_COMMITTED = 'SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED';

/**
 * How long a statement of keyferryd's waits for a lock another session holds (a row an
 * operator's psql locked, another node's transaction) before PostgreSQL cancels it with
 * SQLSTATE 55P03: SQLite's SQLITE_LOCK_WAIT_MS. Without it a request waited as long as the lock was
 * held, holding a pool connection, until every request queued behind it.
 */
export const PG_LOCK_TIMEOUT_MS = 5_000;
/**
 * How long one statement may run before PostgreSQL cancels it (SQLSTATE 57014): well above the
 * longest keyferryd runs (a CRL's listing, a bulk job's chunk, a page of the allow-list, each
 * well under a second at a million rows), below the listeners' 30 s idle timeout, so the client
 * gets the refusal rather than a cut connection. Migrations run without it (migrate.ts).
 */
export const PG_STATEMENT_TIMEOUT_MS = 20_000;
/**
 * How long a request waits for a free pool connection ("timeout exceeded when trying to
 * connect"), and for a new one to open. Longer than PG_LOCK_TIMEOUT_MS: while every connection
 * waits on a lock, a request queued behind them gets one once those waits are refused.
 */
export const PG_POOL_WAIT_MS = 10_000;

/**
 * How long keyferryd waits for PostgreSQL to answer one statement before it drops the connection
 * (DatabaseNoAnswerError): past PG_STATEMENT_TIMEOUT_MS, by which PostgreSQL has cancelled any
 * statement itself, so it acts only on a server that does not answer at all, its connection
 * still open (a frozen host or virtual machine, a network dropping packets without a reset).
 * Without it such a request waited until TCP gave up, ~15 minutes, its pool connection taken
 * for as long. Below the listeners' 30 s request timeout: the client gets the refusal. Not on
 * the pool migrations run on (openDatabase), which may run as long as they need.
 */
export const PG_ANSWER_WAIT_MS = PG_STATEMENT_TIMEOUT_MS + 5_000;

/**
 * Makes `client`'s promise queries (Kysely's) fail with DatabaseNoAnswerError after `waitMs`
 * without an answer, destroying its socket: the query on it ends, the pool discards the client
 * when it is released and opens a new connection for the next request. One timer a query.
 */
function boundAnswerWait(client: pg.PoolClient, waitMs: number): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  (client as { query: unknown }).query = (...args: unknown[]) => {
    const answer = query(...args);
    if (!(answer instanceof Promise)) return answer;
    let dropped = false;
    const timer = setTimeout(() => {
      dropped = true;
      client.connection.stream.destroy();
    }, waitMs);
    return answer.then(
      (result) => {
        clearTimeout(timer);
        return result;
      },
      (err: unknown) => {
        clearTimeout(timer);
        throw dropped ? new DatabaseNoAnswerError(waitMs) : err;
      },
    );
  };
}

/** What each new connection is set to before its first query: READ_COMMITTED and the bounds. */
const SESSION_SETTINGS = [
  READ_COMMITTED,
  `SET lock_timeout = ${PG_LOCK_TIMEOUT_MS}`,
  `SET statement_timeout = ${PG_STATEMENT_TIMEOUT_MS}`,
].join('; ');

/**
 * A request that reads, decides and then writes. SQLite: all of it in one transaction, whose
 * `BEGIN IMMEDIATE` holds the write lock from the first read. PostgreSQL: keyferry's sessions
 * run their transactions READ COMMITTED (READ_COMMITTED), where a read inside a transaction
 * sees nothing a read just before it would not, so the reads run outside one and `work` makes
 * its writes whole itself: one statement, or `asOneWrite` around several (two round trips,
 * BEGIN and COMMIT, fewer per request).
 */
export function readThenWrite<T>(db: Db, work: (db: Db) => Promise<T>): Promise<T> {
  return onPostgres(db) ? work(db) : db.transaction().execute(work);
}

/** The class of {@link transactionForFactory}'s advisory locks (the other key is the factory's id). */
const FACTORY_WRITE_LOCK = 7402353;

/**
 * A management change that reads, decides and writes, made one after the other with every other
 * such change of the factory: in a transaction (the caller's, or one of its own) that on
 * PostgreSQL first takes the factory's advisory lock, so a second identical request reads what
 * the first committed (READ COMMITTED) and answers as a repeat. Without it, two at once both
 * found nothing and both wrote: a unique violation answered 500, or a second online CA key.
 * SQLite's BEGIN IMMEDIATE does the same by itself.
 */
export function transactionForFactory<T>(
  db: Db,
  factoryId: number,
  work: (trx: Db) => Promise<T>,
): Promise<T> {
  return lockedTransaction(db, FACTORY_WRITE_LOCK, factoryId, work);
}

/**
 * `work` in a transaction (the caller's, or one of its own) that on PostgreSQL first takes the
 * advisory lock (`lockClass`, `key`), held until it ends; SQLite's BEGIN IMMEDIATE locks enough.
 */
async function lockedTransaction<T>(
  db: Db,
  lockClass: number,
  key: number,
  work: (trx: Db) => Promise<T>,
): Promise<T> {
  const locked = async (trx: Db) => {
    if (onPostgres(trx)) await sql`select pg_advisory_xact_lock(${lockClass}, ${key})`.execute(trx);
    return work(trx);
  };
  return db.isTransaction ? locked(db) : db.transaction().execute(locked);
}

/** Writes that commit together: in the caller's transaction, or in one of their own. */
export function asOneWrite<T>(db: Db, write: (trx: Db) => Promise<T>): Promise<T> {
  return db.isTransaction ? write(db) : db.transaction().execute(write);
}

export interface Database {
  db: Db;
  dialect: Dialect;
  close(): Promise<void>;
  /**
   * SQLite only: a consistent copy of the database into `file` while it is in use (SQLite's
   * online backup, WAL included). PostgreSQL is backed up with pg_dump.
   */
  backupTo?: (file: string) => Promise<void>;
  /**
   * SQLite on a file only: checkpoints its WAL on a thread of its own from now on
   * (wal-checkpointer.ts); resolves to its stop. One process per database runs it.
   */
  checkpointInBackground?: (log: Logger) => Promise<() => Promise<void>>;
  /** PostgreSQL only: connections of the pool and requests waiting for one (metrics). */
  poolStats?: () => { total: number; idle: number; waiting: number };
}

/**
 * How long a statement of keyferryd's waits for SQLite's write lock while another connection to
 * the file (another worker, an operator's sqlite3 shell) holds it, before the request is refused
 * as busy: PostgreSQL's PG_LOCK_TIMEOUT_MS.
 */
export const SQLITE_LOCK_WAIT_MS = 5_000;
/** The pauses between tries for the write lock (ms), the last one repeated: SQLite's own busy handler's. */
const LOCK_RETRY_PAUSES_MS = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];

/**
 * SQLITE_BUSY and its extended codes but SQLITE_BUSY_SNAPSHOT, which a deferred transaction's
 * stale snapshot gets and no wait cures (keyferryd's transactions begin IMMEDIATE).
 */
function lockedByAnother(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code?.startsWith('SQLITE_BUSY') === true && code !== 'SQLITE_BUSY_SNAPSHOT';
}

/**
 * keyferryd's one SQLite connection, waiting for another connection's write lock on timers
 * rather than in SQLite's busy handler. better-sqlite3 runs a statement inside the call, so
 * with busy_timeout the handler's sleeps held the whole process: while an sqlite3 shell held
 * the lock, `/healthz`, TLS handshakes and every other request waited with it, up to 5 s per
 * statement. Outside a transaction the connection has busy_timeout 0 instead: the `BEGIN
 * IMMEDIATE` that takes the write lock (ImmediateSqliteDriver), or a statement that runs alone,
 * fails at once with SQLITE_BUSY when the lock is taken, having done nothing, and is tried again
 * after a pause while the event loop serves the rest. Inside a transaction, which holds the
 * write lock from its BEGIN, a statement meets SQLITE_BUSY only now and then (several processes
 * opening a new database at once), SQLite says to roll back rather than retry one that is not
 * the COMMIT, and the driver sets busy_timeout back to SQLITE_LOCK_WAIT_MS for the transaction's
 * length: such a statement waits in SQLite's handler as before. (With busy_timeout 0 inside
 * transactions too, one of five keyferryd starting together on a new database stopped at once
 * with "database is locked", in one full test run.) Kysely's SqliteConnection runs the
 * statement synchronously, so its SQLITE_BUSY is thrown, not rejected; a statement that
 * succeeds pays nothing more than a call.
 */
class LockWaitingConnection implements DatabaseConnection {
  readonly #inner: DatabaseConnection;
  readonly #sqlite: SqliteDatabase.Database;
  constructor(inner: DatabaseConnection, sqlite: SqliteDatabase.Database) {
    this.#inner = inner;
    this.#sqlite = sqlite;
  }
  executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    try {
      return this.#inner.executeQuery<R>(query);
    } catch (err) {
      if (!lockedByAnother(err) || this.#sqlite.inTransaction) throw err;
      return this.#waitForLock<R>(query, err);
    }
  }
  streamQuery<R>(query: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    return this.#inner.streamQuery<R>(query, chunkSize);
  }
  async #waitForLock<R>(query: CompiledQuery, busy: unknown): Promise<QueryResult<R>> {
    const deadline = performance.now() + SQLITE_LOCK_WAIT_MS;
    for (let attempt = 0; ; attempt++) {
      const pause = LOCK_RETRY_PAUSES_MS[Math.min(attempt, LOCK_RETRY_PAUSES_MS.length - 1)]!;
      if (performance.now() + pause > deadline) throw busy;
      await sleep(pause);
      try {
        return await this.#inner.executeQuery<R>(query);
      } catch (err) {
        if (!lockedByAnother(err) || this.#sqlite.inTransaction) throw err;
        busy = err;
      }
    }
  }
}

/**
 * SQLite whose transactions begin with `BEGIN IMMEDIATE`, taking the write lock up front. With
 * several worker processes on one file (`workers: N`), a deferred transaction that has read
 * and then writes cannot wait for another process's write: its snapshot is stale, so SQLite
 * answers "database is locked" (SQLITE_BUSY_SNAPSHOT) at once and no wait helps.
 * Taken at BEGIN, the lock is waited for (LockWaitingConnection) before anything is read.
 */
class ImmediateSqliteDriver extends SqliteDriver {
  readonly #sqlite: SqliteDatabase.Database;
  #connection: LockWaitingConnection | undefined;
  /** busy_timeout for a transaction's length, and back to 0 (LockWaitingConnection); not counted as statements. */
  readonly #waitInside: SqliteDatabase.Statement;
  readonly #waitOutside: SqliteDatabase.Statement;
  constructor(config: SqliteDialectConfig, sqlite: SqliteDatabase.Database) {
    super(config);
    this.#sqlite = sqlite;
    this.#waitInside = sqlite.prepare(`PRAGMA busy_timeout = ${SQLITE_LOCK_WAIT_MS}`);
    this.#waitOutside = sqlite.prepare('PRAGMA busy_timeout = 0');
    // from here on outside a transaction; what ran before (the pragmas openDatabase sets at
    // open) waited with better-sqlite3's default 5 s
    this.#waitOutside.get();
  }
  override async acquireConnection(): Promise<DatabaseConnection> {
    const connection = await super.acquireConnection();
    this.#connection ??= new LockWaitingConnection(connection, this.#sqlite);
    return this.#connection;
  }
  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
    this.#waitInside.get();
  }
  override async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await super.commitTransaction(connection);
    this.#waitOutside.get();
  }
  /**
   * After some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM) SQLite has rolled the
   * transaction back itself; a ROLLBACK then fails with "cannot rollback - no transaction is
   * active", and that error, thrown in place of the statement's, hid why the request failed
   * (a full disk answered 500 instead of the storage-full refusal).
   */
  override async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    try {
      if (this.#sqlite.inTransaction) await super.rollbackTransaction(connection);
    } finally {
      this.#waitOutside.get();
    }
  }
}

class ImmediateSqliteDialect extends SqliteDialect {
  readonly #config: SqliteDialectConfig;
  readonly #sqlite: SqliteDatabase.Database;
  constructor(config: SqliteDialectConfig, sqlite: SqliteDatabase.Database) {
    super(config);
    this.#config = config;
    this.#sqlite = sqlite;
  }
  override createDriver(): SqliteDriver {
    return new ImmediateSqliteDriver(this.#config, this.#sqlite);
  }
}

/**
 * A pool of up to `max` connections to the PostgreSQL at `url` with keyferry's session settings
 * and named statements, and Kysely on it; `answerWaitMs`, the wait for each statement's answer
 * (boundAnswerWait), none without it.
 */
function postgresPool(url: string, max: number, answerWaitMs?: number): { db: Db; pool: pg.Pool } {
  const pool = new pg.Pool({ connectionString: url, max, connectionTimeoutMillis: PG_POOL_WAIT_MS });
  // A connection PostgreSQL drops (restart, failover, network) is reported as an 'error' event,
  // on the pool for an idle connection and on the client itself otherwise; unhandled, either
  // would end the whole process. A query running on it fails with its own error; the pool
  // discards the connection and the next query opens a new one; GET /readyz says the database
  // is not reachable meanwhile.
  pool.on('error', () => {});
  pool.on('connect', (client) => {
    client.on('error', () => {});
    // What readThenWrite relies on, whatever the database's or role's default, and the bounds
    // on waiting: statements, not the startup packet's `options`, which connection poolers such
    // as PgBouncer refuse. Queued before the connection's first query, one round trip; sent
    // before the counting (statement-count.ts).
    client.query(SESSION_SETTINGS).catch(() => {});
    nameCompiledStatements(client);
    if (answerWaitMs !== undefined) boundAnswerWait(client, answerWaitMs);
  });
  // A connection the pool cannot open (server down, restarting, unreachable, or not answering
  // within PG_POOL_WAIT_MS) fails as a DatabaseConnectError: requests then get the `unavailable`
  // refusal that says so; one that waited that long for a free connection gets the busy one.
  const connecting = {
    connect: () =>
      pool.connect().catch((err: unknown) => {
        throw new DatabaseConnectError(err);
      }),
    end: () => pool.end(),
  };
  return { db: new Kysely<Tables>({ dialect: new PostgresDialect({ pool: connecting }) }), pool };
}

/** Per SQLite database on a file opened with `threadReads`, its {@link ThreadReader}. */
const threadReaders = new WeakMap<Db, ThreadReader>();

/**
 * The thread that runs long reads of `db` off the event loop, while it is usable: SQLite on a
 * file opened with `threadReads` (keyferryd's processes). Not for a transaction (its writes are
 * not visible to another connection), nor on PostgreSQL, whose driver reads the rows as they
 * arrive, a socket's chunk at a time, letting the event loop run in between.
 */
export function threadReaderOf(db: Db): ThreadReader | undefined {
  const reader = threadReaders.get(db);
  return reader?.usable ? reader : undefined;
}

/**
 * Opens the configured backend and brings its schema up to date. For keyferryd's processes:
 * `backgroundCheckpoints`, SQLite's connection leaves the WAL checkpoints to the checkpointer
 * thread, checkpointing itself only past FALLBACK_CHECKPOINT_PAGES; `threadReads`, SQLite on a
 * file gets a {@link ThreadReader} ({@link threadReaderOf}), which reports to `log`; `existing`,
 * SQLite opens only a database file that exists, making neither it nor its directory.
 */
export async function openDatabase(
  storage: Config['storage'],
  dataDir: string,
  options: { backgroundCheckpoints?: boolean; threadReads?: boolean; log?: Logger; existing?: boolean } = {},
): Promise<Database> {
  if (storage.kind === 'sqlite') {
    const path = storage.path ?? `${dataDir}/keyferry.db`;
    if (path !== ':memory:' && !options.existing) mkdirSync(dirname(path), { recursive: true });
    const sqlite = new SqliteDatabase(path, { fileMustExist: options.existing === true });
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('foreign_keys = ON');
    if (options.backgroundCheckpoints) sqlite.pragma(`wal_autocheckpoint = ${FALLBACK_CHECKPOINT_PAGES}`);
    const db = new Kysely<Tables>({
      dialect: new ImmediateSqliteDialect({ database: withStatementCache(sqlite) }, sqlite),
    });
    if (path !== ':memory:') noteStorageFile(resolve(path));
    await migrate(db as Kysely<unknown>, 'sqlite');
    const reader =
      options.threadReads && path !== ':memory:' ? new ThreadReader(path, options.log) : undefined;
    if (reader) threadReaders.set(db, reader);
    return {
      db,
      dialect: 'sqlite',
      close: async () => {
        await reader?.close();
        await db.destroy();
      },
      backupTo: async (file) => {
        await sqlite.backup(file);
      },
      ...(path === ':memory:'
        ? {}
        : { checkpointInBackground: (log: Logger) => startWalCheckpointer(path, log) }),
    };
  }
  noteStorageServer(storage.url);
  // Migrations first, on a connection of their own: the only statements keyferryd lets run as
  // long as they need (migrate.ts lifts the server's bounds; this pool sets no answer wait).
  const migrations = postgresPool(storage.url, 1);
  try {
    await migrate(migrations.db as Kysely<unknown>, 'postgres');
  } finally {
    await migrations.db.destroy();
  }
  const { db, pool } = postgresPool(storage.url, storage.poolSize, PG_ANSWER_WAIT_MS);
  return {
    db,
    dialect: 'postgres',
    close: () => db.destroy(),
    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
  };
}

import { type Kysely, sql } from 'kysely';
import * as foundation from './migrations/001-foundation.ts';
import * as el2g from './migrations/002-el2g.ts';
import * as gateway from './migrations/003-gateway.ts';
import * as tokenLifecycle from './migrations/004-token-lifecycle.ts';
import * as oneOpenCaRequest from './migrations/005-one-open-ca-request.ts';
import * as pkiDeviceCas from './migrations/006-pki-device-cas.ts';
import * as deviceState from './migrations/007-device-state.ts';
import * as certificateRenewal from './migrations/008-certificate-renewal.ts';
import * as bulkJobLeases from './migrations/009-bulk-job-leases.ts';
import * as auditCounts from './migrations/010-audit-counts.ts';
import * as deviceGroupIndex from './migrations/011-device-group-index.ts';
import * as certificateRotation from './migrations/012-certificate-rotation.ts';
import * as validitySeconds from './migrations/013-validity-seconds.ts';
import * as fewerPagesPerWrite from './migrations/014-fewer-pages-per-write.ts';
import * as auditDeviceIndex from './migrations/015-audit-device-index.ts';
import * as activeDeviceStates from './migrations/016-active-device-states.ts';
import * as crlRevocationVersion from './migrations/017-crl-revocation-version.ts';
import * as crlListingCovered from './migrations/018-crl-listing-covered.ts';
import * as enrollmentCount from './migrations/019-enrollment-count.ts';

export type Dialect = 'sqlite' | 'postgres';

/** What a migration needs to know about the database it runs on. */
export interface MigrationContext {
  dialect: Dialect;
  /** Auto-incrementing integer key type: SQLite `integer` (rowid alias), PostgreSQL `serial`. */
  serial: 'integer' | 'serial';
}

interface Migration {
  name: string;
  up(db: Kysely<unknown>, ctx: MigrationContext): Promise<void>;
}

/** The one ordered migration set of both backends. Append; never edit a released entry. */
export const MIGRATIONS: readonly Migration[] = [
  { name: '001-foundation', up: foundation.up },
  { name: '002-el2g', up: el2g.up },
  { name: '003-gateway', up: gateway.up },
  { name: '004-token-lifecycle', up: tokenLifecycle.up },
  { name: '005-one-open-ca-request', up: oneOpenCaRequest.up },
  { name: '006-pki-device-cas', up: pkiDeviceCas.up },
  { name: '007-device-state', up: deviceState.up },
  { name: '008-certificate-renewal', up: certificateRenewal.up },
  { name: '009-bulk-job-leases', up: bulkJobLeases.up },
  { name: '010-audit-counts', up: auditCounts.up },
  { name: '011-device-group-index', up: deviceGroupIndex.up },
  { name: '012-certificate-rotation', up: certificateRotation.up },
  { name: '013-validity-seconds', up: validitySeconds.up },
  { name: '014-fewer-pages-per-write', up: fewerPagesPerWrite.up },
  { name: '015-audit-device-index', up: auditDeviceIndex.up },
  { name: '016-active-device-states', up: activeDeviceStates.up },
  { name: '017-crl-revocation-version', up: crlRevocationVersion.up },
  { name: '018-crl-listing-covered', up: crlListingCovered.up },
  { name: '019-enrollment-count', up: enrollmentCount.up },
];

/**
 * Applies pending migrations, each in its own transaction. On PostgreSQL an advisory lock,
 * taken before anything else, keeps several keyferryd starting at once from racing; on SQLite
 * each migration's transaction takes the write lock first and skips a migration another
 * process recorded meanwhile (a start after an upgrade and a `keyferryd admin` command at once).
 */
export async function migrate(db: Kysely<unknown>, dialect: Dialect): Promise<string[]> {
  const ctx: MigrationContext = { dialect, serial: dialect === 'sqlite' ? 'integer' : 'serial' };
  const applied: string[] = [];
  await db.connection().execute(async (conn) => {
    // A migration may rewrite or index a large table, and wait for another node's migrations:
    // this connection runs without keyferryd's lock and statement bounds (database.ts), which
    // it gets back before it returns to the pool.
    const bounds = dialect === 'postgres' ? await unbounded(conn) : undefined;
    // The lock comes before any DDL: two PostgreSQL sessions racing on CREATE TABLE IF NOT
    // EXISTS can both try to create it and one fails on the catalog's unique index.
    if (dialect === 'postgres') await sql`select pg_advisory_lock(7402351)`.execute(conn);
    try {
      await conn.schema
        .createTable('keyferry_migrations')
        .ifNotExists()
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('applied_at', 'text', (c) => c.notNull())
        .execute();
      const rows = await sql<{ name: string }>`select name from keyferry_migrations`.execute(conn);
      const done = new Set(rows.rows.map((r) => r.name));
      for (const m of MIGRATIONS) {
        if (done.has(m.name)) continue;
        const ran = await conn.transaction().execute(async (trx) => {
          // SQLite has no advisory lock: another process may have applied it since the read
          // above; this transaction holds the write lock (BEGIN IMMEDIATE), so the check holds
          const recorded = await sql`select 1 from keyferry_migrations where name = ${m.name}`.execute(trx);
          if (recorded.rows.length > 0) return false;
          await m.up(trx, ctx);
          await sql`insert into keyferry_migrations (name, applied_at) values (${m.name}, ${new Date().toISOString()})`.execute(
            trx,
          );
          return true;
        });
        if (ran) applied.push(m.name);
      }
    } finally {
      if (dialect === 'postgres') await sql`select pg_advisory_unlock(7402351)`.execute(conn);
      await bounds?.restore();
    }
  });
  return applied;
}

/** PostgreSQL: lock_timeout and statement_timeout off on `conn`; `restore` sets them back. */
async function unbounded(conn: Kysely<unknown>): Promise<{ restore(): Promise<void> }> {
  const { rows } = await sql<{ lock: string; statement: string }>`select
    current_setting('lock_timeout') as lock, current_setting('statement_timeout') as statement`.execute(conn);
  const { lock, statement } = rows[0]!;
  await sql`select set_config('lock_timeout', '0', false), set_config('statement_timeout', '0', false)`.execute(
    conn,
  );
  return {
    restore: async () => {
      await sql`select set_config('lock_timeout', ${lock}, false), set_config('statement_timeout', ${statement}, false)`.execute(
        conn,
      );
    },
  };
}

import { sql } from 'kysely';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { createDatabase } from '../../../../test/support/postgres.ts';
import { openDatabase, PG_LOCK_TIMEOUT_MS, PG_STATEMENT_TIMEOUT_MS } from '../../src/storage/database.ts';
import {
  DatabaseBusyError,
  databaseRefusal,
  PG_QUERY_CANCELED,
} from '../../src/storage/database-unreachable.ts';

let counter = 0;

/** A database whose own default isolation is SERIALIZABLE, as an operator may have set it. */
async function serializableDatabase(): Promise<string> {
  const url = await createDatabase(inject('postgresUrl'), `iso_${process.pid}_${counter++}`);
  const admin = new pg.Client(url);
  await admin.connect();
  try {
    const name = new URL(url).pathname.slice(1);
    await admin.query(`ALTER DATABASE "${name}" SET default_transaction_isolation = 'serializable'`);
  } finally {
    await admin.end();
  }
  return url;
}

async function isolationOf(url: string, withKeyferry: boolean): Promise<string> {
  if (!withKeyferry) {
    const client = new pg.Client(url);
    await client.connect();
    try {
      return (await client.query('SHOW transaction_isolation')).rows[0].transaction_isolation;
    } finally {
      await client.end();
    }
  }
  const database = await openDatabase({ kind: 'postgres', url, poolSize: 2 }, '/tmp');
  try {
    return await database.db
      .transaction()
      .execute(
        async (trx) =>
          (await sql<{ transaction_isolation: string }>`SHOW transaction_isolation`.execute(trx)).rows[0]!
            .transaction_isolation,
      );
  } finally {
    await database.close();
  }
}

/**
 * A device-link request on PostgreSQL reads outside a transaction and then writes
 * (storage/database.ts, readThenWrite), which is what a transaction gives at READ COMMITTED:
 * keyferry's sessions ask for it whatever the database's default.
 */
describe('the isolation of keyferry transactions on PostgreSQL', () => {
  it('is READ COMMITTED on a database whose default is SERIALIZABLE', async () => {
    const url = await serializableDatabase();
    expect(await isolationOf(url, false)).toBe('serializable');
    expect(await isolationOf(url, true)).toBe('read committed');
  });

  it("is READ COMMITTED when the URL's options ask for another level", async () => {
    const url = new URL(await serializableDatabase());
    url.searchParams.set('options', '-c default_transaction_isolation=repeatable\\ read');
    expect(await isolationOf(url.toString(), false)).toBe('repeatable read');
    expect(await isolationOf(url.toString(), true)).toBe('read committed');
  });
});

/**
 * A statement of keyferryd's waits for another session's lock at most PG_LOCK_TIMEOUT_MS and
 * runs at most PG_STATEMENT_TIMEOUT_MS, as its SQLite waits at most SQLITE_LOCK_WAIT_MS
 * (test/devicelink/database-busy.test.ts: what a request gets then). Migrations run unbounded,
 * on a connection of their own.
 */
describe('the bounds of keyferry sessions on PostgreSQL', () => {
  it('are set on every connection of the pool', async () => {
    const url = await createDatabase(inject('postgresUrl'), `bounds_${process.pid}_${counter++}`);
    const database = await openDatabase({ kind: 'postgres', url, poolSize: 1 }, '/tmp');
    try {
      const { rows } = await sql<{ lock: string; statement: string }>`select
        current_setting('lock_timeout') as lock, current_setting('statement_timeout') as statement`.execute(
        database.db,
      );
      expect(rows[0]).toEqual({
        lock: `${PG_LOCK_TIMEOUT_MS / 1000}s`,
        statement: `${PG_STATEMENT_TIMEOUT_MS / 1000}s`,
      });
    } finally {
      await database.close();
    }
  });

  it('a statement PostgreSQL cancels at its bound (57014) is refused as the database being busy', async () => {
    const url = await createDatabase(inject('postgresUrl'), `bounds_${process.pid}_${counter++}`);
    const database = await openDatabase({ kind: 'postgres', url, poolSize: 1 }, '/tmp');
    try {
      // the server's own cancel, of a statement past a bound made short for the test
      const cancelled = await database.db
        .transaction()
        .execute(async (trx) => {
          await sql`set local statement_timeout = 50`.execute(trx);
          await sql`select pg_sleep(5)`.execute(trx);
        })
        .then(
          () => undefined,
          (err: unknown) => err,
        );
      expect((cancelled as { code?: string }).code).toBe(PG_QUERY_CANCELED);
      const refusal = databaseRefusal(cancelled);
      expect(refusal).toBeInstanceOf(DatabaseBusyError);
      expect(refusal).toMatchObject({
        status: 503,
        code: 'unavailable',
        reason: { code: PG_QUERY_CANCELED, kind: 'slow' },
        message: expect.stringMatching(
          /PostgreSQL database is busy: it did not answer in time, so this request changed nothing/,
        ),
      });
      // the cancel ended only the statement: the connection serves on, with the pool's bound
      const { rows } = await sql<{
        statement: string;
      }>`select current_setting('statement_timeout') as statement`.execute(database.db);
      expect(rows[0]!.statement).toBe(`${PG_STATEMENT_TIMEOUT_MS / 1000}s`);
    } finally {
      await database.close();
    }
  });
});

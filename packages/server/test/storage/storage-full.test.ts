import { KeyferryError } from '@keyferry/core';
import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { problemBody, toKeyferryError } from '../../src/http/problem.ts';
import { openDatabase } from '../../src/storage/database.ts';
import { StorageFullError, StorageFullLog, storageFullCause } from '../../src/storage/storage-full.ts';

const sqliteFull = () =>
  Object.assign(new Error('database or disk is full'), { name: 'SqliteError', code: 'SQLITE_FULL' });

describe('a full disk', () => {
  it('is SQLite’s SQLITE_FULL or a file’s ENOSPC/EDQUOT, also under an error that wraps it', () => {
    expect(storageFullCause(sqliteFull())).toEqual({
      code: 'SQLITE_FULL',
      message: 'database or disk is full',
      disk: 'keyferryd',
    });
    const enospc = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    expect(storageFullCause(enospc)?.code).toBe('ENOSPC');
    const wrapped = new KeyferryError('internal', 'could not store the certificate', { cause: sqliteFull() });
    expect(storageFullCause(wrapped)?.code).toBe('SQLITE_FULL');
    expect(storageFullCause(Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' }))).toBe(
      undefined,
    );
    expect(storageFullCause('SQLITE_FULL')).toBe(undefined);
  });

  it('is refused 503 unavailable with a message the client sees: what is wrong and what to do', () => {
    const error = toKeyferryError(new KeyferryError('internal', 'internal error', { cause: sqliteFull() }));
    expect(error).toBeInstanceOf(StorageFullError);
    expect(problemBody(error, 'c-1')).toEqual({
      type: 'urn:keyferry:problem:unavailable',
      title: 'unavailable',
      status: 503,
      code: 'unavailable',
      detail:
        "keyferryd's storage is full, so it cannot record this request and changed nothing: retry later; the operator must free space on the disk holding keyferryd's data dir (its database)",
      correlationId: 'c-1',
    });
    // other server faults still show nothing but the correlation id
    expect(problemBody(toKeyferryError(new Error('boom')), 'c-2').detail).toBe(
      'internal error; quote correlation id c-2 when reporting it',
    );
  });

  it('on PostgreSQL is SQLSTATE 53100, refused saying the space to free is on the database server', () => {
    const pgFull = Object.assign(
      new Error('could not extend file "base/16384/16385": No space left on device'),
      { code: '53100', severity: 'ERROR' },
    );
    expect(storageFullCause(pgFull)).toEqual({
      code: '53100',
      message: 'could not extend file "base/16384/16385": No space left on device',
      disk: 'postgres',
    });
    const error = toKeyferryError(pgFull);
    expect(error).toBeInstanceOf(StorageFullError);
    expect(problemBody(error, 'c-3')).toMatchObject({
      status: 503,
      code: 'unavailable',
      detail:
        "the PostgreSQL server's storage is full, so keyferryd cannot record this request and changed nothing: retry later; the operator must free space on the disk holding the PostgreSQL server's data directory (not keyferryd's data dir)",
    });
    // other PostgreSQL errors stay what they were (53200 is out of memory, not of disk)
    expect(storageFullCause(Object.assign(new Error('out of memory'), { code: '53200' }))).toBe(undefined);
  });

  it('is logged at error once per burst, not once per refused request', () => {
    let now = 0;
    const lines: Array<{ fields: Record<string, unknown>; message: string }> = [];
    const log = {
      error: (fields: object, message: string) => lines.push({ fields: { ...fields }, message }),
    };
    const burst = new StorageFullLog({ now: () => now, quietMs: 60_000 });
    const error = new StorageFullError(
      { code: 'SQLITE_FULL', message: 'database or disk is full', disk: 'keyferryd' },
      sqliteFull(),
    );
    const at = (t: number) => {
      now = t;
      return burst.report(log, error);
    };
    expect([0, 1_000, 30_000, 89_000].map(at)).toEqual([true, false, false, false]);
    expect(lines).toHaveLength(1);
    expect(lines[0]!.message).toMatch(
      /^storage full \(SQLITE_FULL: database or disk is full\): .*free space/,
    );
    // a minute without a refusal ends the burst; the next one logs again, with the last's count
    expect(at(149_000)).toBe(true);
    expect(lines).toHaveLength(2);
    expect(lines[1]!.fields).toMatchObject({ code: 'SQLITE_FULL', refusedInLastBurst: 4 });
  });

  it('keeps SQLite’s SQLITE_FULL when SQLite rolled the transaction back itself', async () => {
    const { db, close } = await openDatabase({ kind: 'sqlite', path: ':memory:' }, '');
    try {
      await sql`create table filler (x blob)`.execute(db);
      const { rows } = await sql<{ page_count: number }>`pragma page_count`.execute(db);
      // the database cannot grow past its pages now: a big insert is SQLITE_FULL
      await sql.raw(`pragma max_page_count = ${rows[0]!.page_count + 2}`).execute(db);
      const failed = await db
        .transaction()
        .execute(async (trx) => {
          await sql`insert into filler values (zeroblob(1000000))`.execute(trx);
        })
        .then(
          () => undefined,
          (e: unknown) => e as Error & { code?: string },
        );
      // before: "cannot rollback - no transaction is active" (SQLITE_ERROR) in its place
      expect({ code: failed?.code, message: failed?.message }).toEqual({
        code: 'SQLITE_FULL',
        message: 'database or disk is full',
      });
      // and the connection works on
      await sql.raw('pragma max_page_count = 1073741823').execute(db);
      await db.transaction().execute((trx) => sql`insert into filler values (1)`.execute(trx));
      const count = await sql<{ n: number }>`select count(*) as n from filler`.execute(db);
      expect(count.rows[0]!.n).toBe(1);
    } finally {
      await close();
    }
  });
});

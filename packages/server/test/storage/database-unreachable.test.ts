import { KeyferryError } from '@keyferry/core';
import { describe, expect, it } from 'vitest';
import { problemBody, toKeyferryError } from '../../src/http/problem.ts';
import {
  DatabaseBusyError,
  DatabaseBusyLog,
  DatabaseConnectError,
  DatabaseNoAnswerError,
  DatabaseUnreachableError,
  databaseBusyCause,
  databaseUnreachableCause,
} from '../../src/storage/database-unreachable.ts';

const pgError = (code: string, message: string) =>
  Object.assign(new Error(message), { code, severity: 'FATAL' });

describe('a PostgreSQL server that is not there', () => {
  it('is a connection the pool could not open, a shutdown, a crash, a recovery or a dropped connection', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    expect(databaseUnreachableCause(new DatabaseConnectError(refused))).toEqual({
      code: 'ECONNREFUSED',
      message: 'connect ECONNREFUSED 127.0.0.1:5432',
    });
    expect(databaseUnreachableCause(pgError('57P03', 'the database system is in recovery mode'))?.code).toBe(
      '57P03',
    );
    expect(databaseUnreachableCause(pgError('57P02', 'terminating connection because of crash'))?.code).toBe(
      '57P02',
    );
    expect(databaseUnreachableCause(new Error('Connection terminated unexpectedly'))?.code).toBe(
      'terminated',
    );
    const wrapped = new KeyferryError('internal', 'internal error', {
      cause: new Error('Connection terminated unexpectedly'),
    });
    expect(databaseUnreachableCause(wrapped)?.code).toBe('terminated');
    // a refused connection elsewhere (not the pool's) is not the database's
    expect(databaseUnreachableCause(refused)).toBe(undefined);
    expect(databaseUnreachableCause(pgError('23505', 'duplicate key value'))).toBe(undefined);
  });

  it('is refused 503 unavailable, saying what is wrong and what to do', () => {
    const error = toKeyferryError(new DatabaseConnectError(new Error('connect ECONNREFUSED 127.0.0.1:5432')));
    expect(error).toBeInstanceOf(DatabaseUnreachableError);
    expect(problemBody(error, 'c-1')).toMatchObject({
      status: 503,
      code: 'unavailable',
      detail:
        'keyferryd cannot reach its PostgreSQL database, so it changed nothing: retry later; the operator must bring the database server back (its log says why it stopped; after a full disk, free space on it and start it again): keyferryd reconnects by itself',
    });
  });
});

describe('a PostgreSQL database too busy to answer within the bounds', () => {
  const poolWait = new DatabaseConnectError(new Error('timeout exceeded when trying to connect'));

  it('is a lock wait past lock_timeout, a statement past statement_timeout, or no free pool connection', () => {
    expect(databaseBusyCause(pgError('55P03', 'canceling statement due to lock timeout'))).toEqual({
      code: '55P03',
      message: 'canceling statement due to lock timeout',
      kind: 'lock',
    });
    expect(databaseBusyCause(pgError('57014', 'canceling statement due to statement timeout'))?.kind).toBe(
      'slow',
    );
    expect(databaseBusyCause(poolWait)).toEqual({
      code: 'pool',
      message: 'timeout exceeded when trying to connect',
      kind: 'slow',
    });
    // the pool waited for a free connection: busy, not a server that is gone
    expect(databaseUnreachableCause(poolWait)).toBe(undefined);
    // a new connection that did not open in time is a server that does not answer
    const notOpened = new DatabaseConnectError(new Error('Connection terminated due to connection timeout'));
    expect(databaseBusyCause(notOpened)).toBe(undefined);
    expect(databaseUnreachableCause(notOpened)?.code).toBe('connect');
    expect(databaseBusyCause(pgError('23505', 'duplicate key value'))).toBe(undefined);
    // SQLite's write lock held past busy_timeout by another connection
    const locked = Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
    expect(databaseBusyCause(locked)).toEqual({
      code: 'SQLITE_BUSY',
      message: 'database is locked',
      kind: 'sqlite',
    });
    expect(databaseBusyCause(Object.assign(new Error('database is full'), { code: 'SQLITE_FULL' }))).toBe(
      undefined,
    );
  });

  it('is refused 503 unavailable, saying what is wrong and what to do', () => {
    const locked = toKeyferryError(pgError('55P03', 'canceling statement due to lock timeout'));
    expect(locked).toBeInstanceOf(DatabaseBusyError);
    expect(problemBody(locked, 'c-1')).toMatchObject({
      status: 503,
      code: 'unavailable',
      detail:
        "keyferryd's PostgreSQL database is busy: another session holds a lock this request needs, so it changed nothing: retry later; the operator should look for the session holding it (pg_stat_activity, pg_locks: e.g. a psql left in a transaction) and end it",
    });
    for (const slow of [pgError('57014', 'canceling statement due to statement timeout'), poolWait])
      expect(problemBody(toKeyferryError(slow), 'c-2')).toMatchObject({
        status: 503,
        code: 'unavailable',
        detail:
          "keyferryd's PostgreSQL database is busy: it did not answer in time, so this request changed nothing: retry later; the operator should look at what the database is doing (pg_stat_activity: statements running long, sessions holding locks)",
      });
  });

  it('a statement PostgreSQL did not answer at all is refused busy, not "cannot reach", without claiming nothing changed', () => {
    const silent = new DatabaseNoAnswerError(25_000);
    expect(databaseUnreachableCause(silent)).toBe(undefined);
    expect(databaseBusyCause(silent)).toEqual({
      code: 'no_answer',
      message: 'no answer from the database within 25 s: keyferryd dropped the connection',
      kind: 'silent',
    });
    const body = problemBody(toKeyferryError(silent), 'c-3');
    expect(body).toMatchObject({ status: 503, code: 'unavailable' });
    expect(body.detail).toMatch(
      /did not answer in time, so keyferryd dropped the connection, which rolls back/,
    );
    expect(body.detail).not.toMatch(/changed nothing/);
  });

  it('is logged once per burst', () => {
    let now = 0;
    const log = new DatabaseBusyLog({ now: () => now, quietMs: 1000 });
    const lines: Array<{ fields: object; message: string }> = [];
    const sink = { error: (fields: object, message: string) => lines.push({ fields, message }) };
    const busy = toKeyferryError(
      pgError('55P03', 'canceling statement due to lock timeout'),
    ) as DatabaseBusyError;
    expect([log.report(sink, busy), log.report(sink, busy)]).toEqual([true, false]);
    now = 2000;
    expect(log.report(sink, busy)).toBe(true);
    expect(lines.map((l) => l.fields)).toEqual([
      { code: '55P03', cause: 'canceling statement due to lock timeout' },
      { code: '55P03', cause: 'canceling statement due to lock timeout', refusedInLastBurst: 2 },
    ]);
    expect(lines[0]!.message).toMatch(
      /^database busy \(55P03: .*\): requests that wait on it are refused with 503 unavailable; find the session holding the lock/,
    );
  });
});

import { KeyferryError } from '@keyferry/core';
import { describe, expect, it } from 'vitest';
import { problemBody, toKeyferryError } from '../../src/http/problem.ts';
import {
  DatabaseConnectError,
  DatabaseUnreachableError,
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

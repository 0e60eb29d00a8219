import { join } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DeviceLinkFixture, freshCsr, startDeviceLinkFixture } from './fixture.ts';

const ENROLL = '/.well-known/est/fio-device-gateway-ca/simpleenroll';
const CSR_HEADERS = { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' };
const BUSY =
  /SQLite database is busy: another process holds its write lock, so this request changed nothing: retry/;

/**
 * keyferryd on SQLite while another connection to its file (an operator's sqlite3 shell, another
 * process) holds the write lock in an open transaction. Its wait is bounded (busy_timeout 5 s);
 * past it SQLite answers SQLITE_BUSY, which keyferryd answered 500 internal (after waiting
 * again for the refusal's audit row) until it got the busy refusal PostgreSQL's lock_timeout
 * gets (database-busy.test.ts).
 */
describe('keyferryd while another connection holds the SQLite write lock', { timeout: 120_000 }, () => {
  let f: DeviceLinkFixture;
  let other: SqliteDatabase.Database;
  const lines: Array<{ level: number; msg: string; code?: string }> = [];

  beforeAll(async () => {
    const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
    f = await startDeviceLinkFixture('sqlite', {}, { log });
    other = new SqliteDatabase(join(f.svc.dataDir, 'keyferry.db'));
  });
  afterAll(async () => {
    if (other?.inTransaction) other.exec('ROLLBACK');
    other?.close();
    await f?.svc.stop();
  });

  it('an enrollment is refused 503 busy, nothing of it kept; it provisions once the lock is released', async () => {
    const device = await f.device();
    expect((await f.call(device, { path: '/device-link/v1/manifest' })).status).toBe(200);
    other.exec('BEGIN IMMEDIATE');
    const version = other.pragma('data_version', { simple: true });
    const errorsBefore = lines.filter((l) => l.level === 50).length;

    const csr = await freshCsr();
    const enroll = () =>
      f.call(device, { method: 'POST', path: ENROLL, headers: CSR_HEADERS, body: csr.base64 });
    const refused = await enroll();
    expect(refused.status, refused.text).toBe(503);
    expect(refused.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(refused.json).toMatchObject({ code: 'unavailable', detail: expect.stringMatching(BUSY) });
    // nothing committed by keyferryd meanwhile
    expect(other.pragma('data_version', { simple: true })).toBe(version);
    const errors = lines.filter((l) => l.level === 50).slice(errorsBefore);
    expect(errors.map((l) => [l.code, l.msg])).toEqual([
      [
        expect.stringMatching(/^SQLITE_BUSY/),
        expect.stringMatching(/^database busy .*write lock on .*keyferry\.db/),
      ],
    ]);

    other.exec('ROLLBACK');
    const retry = await enroll();
    expect(retry.status, retry.text).toBe(200);
  });
});

import { readFileSync } from 'node:fs';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createDatabase, tableDigest } from '../../../../test/support/postgres.ts';
import type { Tables } from '../../src/storage/tables.ts';
import { untilWaitingOnALock } from '../support/databases.ts';
import { type DeviceLinkFixture, freshCsr, startDeviceLinkFixture } from './fixture.ts';

const ENROLL = '/.well-known/est/fio-device-gateway-ca/simpleenroll';
const CSR_HEADERS = { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' };
const BASE = '/ota/factories/demo';
/** The pool's connections: as many enrollments as this wait on the lock at once, taking all of them. */
const POOL = 2;
const BUSY = /PostgreSQL database is busy.*changed nothing: retry.*pg_stat_activity/;

/** The query docs/deployment.md gives to find the session holding what keyferryd waits for. */
function operatorQuery(): string {
  const doc = readFileSync(new URL('../../../../docs/deployment.md', import.meta.url), 'utf8');
  const block = /To find the session[^`]*```sql\n([\s\S]*?)```/.exec(doc);
  if (!block) throw new Error('docs/deployment.md has no query to find the session');
  return block[1]!.trim().replace(/;$/, '');
}

/**
 * keyferryd on a PostgreSQL where another session (an operator's psql left in a transaction
 * after SELECT ... FOR UPDATE) holds the device's row of `devices`, which an enrollment's write
 * must lock. Before lock_timeout, the enrollments waited for it forever, each holding a pool
 * connection, and then every request that needs the database queued behind them.
 */
describe('keyferryd while another session holds a row lock (postgres)', { timeout: 120_000 }, () => {
  let f: DeviceLinkFixture;
  /** The operator's session, and the test's own connection to look at the database. */
  let operator: pg.Client;
  let look: Kysely<Tables>;
  let operatorPid: number;
  const lines: Array<{ level: number; msg: string; code?: string }> = [];

  beforeAll(async () => {
    const url = await createDatabase(inject('postgresUrl'), `busy_${process.pid}_${Date.now()}`);
    const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
    f = await startDeviceLinkFixture(
      'postgres',
      { storage: { kind: 'postgres', url, poolSize: POOL } },
      { log },
    );
    operator = new pg.Client({ connectionString: url });
    await operator.connect();
    operatorPid = (await operator.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
    look = new Kysely<Tables>({
      dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) }),
    });
  });
  afterAll(async () => {
    await operator?.query('rollback').catch(() => {});
    await operator?.end();
    await look?.destroy();
    await f?.svc.stop();
  });

  /** Every row of every keyferry table, digested: equal digests, nothing committed between. */
  const digest = () => tableDigest(operator);

  it('an enrollment waiting on the lock is refused 503 busy, nothing of it kept, other requests answered; it provisions once the lock is released', async () => {
    const device = await f.device();
    expect((await f.call(device, { path: '/device-link/v1/manifest' })).status).toBe(200);
    await operator.query('begin');
    await operator.query('select * from devices where device_id = $1 for update', [device.uid.decimal]);
    const before = await digest();
    const errorsBefore = lines.filter((l) => l.level === 50).length;

    const csrs = await Promise.all(Array.from({ length: POOL }, () => freshCsr()));
    const enrollments = csrs.map((csr) =>
      f.call(device, { method: 'POST', path: ENROLL, headers: CSR_HEADERS, body: csr.base64 }),
    );
    // every pool connection is now an enrollment waiting on the operator's lock
    await untilWaitingOnALock(look, POOL);
    // what docs/deployment.md tells the operator to run finds the session holding the lock
    const found = await sql.raw<{ pid: number }>(operatorQuery()).execute(look);
    expect(found.rows.map((r) => r.pid)).toContain(operatorPid);
    const health = await fetch(`${f.svc.url}/healthz`);
    expect(health.status).toBe(200);
    // a read needs a pool connection: it gets one when an enrollment is refused
    const list = await f.svc.call('GET', `${BASE}/el2g/devices/`);
    expect(list.status).toBe(200);

    for (const answer of await Promise.all(enrollments)) {
      expect(answer.status, answer.text).toBe(503);
      expect(answer.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(answer.json).toMatchObject({ code: 'unavailable', detail: expect.stringMatching(BUSY) });
    }
    // a management write on the locked row: refused the same way
    const removal = await f.svc.call('DELETE', `${BASE}/el2g/devices/`, {
      body: { 'product-id': '935389312472', devices: [device.uid.decimal] },
    });
    expect(removal.status, JSON.stringify(removal.json)).toBe(503);
    expect(removal.json).toMatchObject({ code: 'unavailable', detail: expect.stringMatching(BUSY) });
    expect(await digest()).toEqual(before);
    // one error line for the burst, naming the lock timeout's SQLSTATE
    const errors = lines.filter((l) => l.level === 50).slice(errorsBefore);
    expect(errors.map((l) => [l.code, l.msg])).toEqual([['55P03', expect.stringMatching(/database busy/)]]);

    await operator.query('rollback');
    const retry = await f.call(device, {
      method: 'POST',
      path: ENROLL,
      headers: CSR_HEADERS,
      body: csrs[0]!.base64,
    });
    expect(retry.status, retry.text).toBe(200);
    const live = await look
      .selectFrom('certificates')
      .select('serial_hex')
      .where('subject_cn', '=', device.uid.hex)
      .where('revoked_at', 'is', null)
      .execute();
    expect(live).toHaveLength(1);
  });

  it('a request that finds no free pool connection in time is refused 503 busy, not "cannot reach"', async () => {
    const device = await f.device();
    expect((await f.call(device, { path: '/device-link/v1/manifest' })).status).toBe(200);
    await operator.query('begin');
    await operator.query('select * from devices where device_id = $1 for update', [device.uid.decimal]);
    const enrollments = (await Promise.all(Array.from({ length: POOL }, () => freshCsr()))).map((csr) =>
      f.call(device, { method: 'POST', path: ENROLL, headers: CSR_HEADERS, body: csr.base64 }),
    );
    await untilWaitingOnALock(look, POOL);
    // The backends of both pool connections, stopped as a hung database node would be: their
    // lock timeout cannot fire meanwhile, so the pool stays taken. (They must be stopped
    // within the 5 s lock timeout: the queries between are a few milliseconds.)
    const { rows } = await sql<{ pid: number }>`select pid from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock'`.execute(look);
    const stopped = rows.map((r) => r.pid);
    for (const pid of stopped) process.kill(pid, 'SIGSTOP');
    try {
      const still = await sql<{ n: string }>`select count(*) as n from pg_stat_activity
        where pid = any(${stopped}) and wait_event_type = 'Lock'`.execute(look);
      expect(Number(still.rows[0]!.n), 'the enrollments stopped while still waiting on the lock').toBe(POOL);
      const list = await f.svc.call('GET', `${BASE}/el2g/devices/`);
      expect(list.status, JSON.stringify(list.json)).toBe(503);
      expect(list.json).toMatchObject({
        code: 'unavailable',
        detail: expect.stringMatching(/PostgreSQL database is busy: it did not answer in time.*retry/),
      });
      expect((await fetch(`${f.svc.url}/healthz`)).status).toBe(200);
    } finally {
      for (const pid of stopped) process.kill(pid, 'SIGCONT');
    }
    // resumed, their lock timeout has long passed
    for (const answer of await Promise.all(enrollments)) {
      expect(answer.status, answer.text).toBe(503);
      expect(answer.json).toMatchObject({ code: 'unavailable', detail: expect.stringMatching(BUSY) });
    }
    await operator.query('rollback');
    expect((await f.svc.call('GET', `${BASE}/el2g/devices/`)).status).toBe(200);
    const retry = await f.call(device, {
      method: 'POST',
      path: ENROLL,
      headers: CSR_HEADERS,
      body: (await freshCsr()).base64,
    });
    expect(retry.status, retry.text).toBe(200);
  });
});

import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createDatabase, tableDigest } from '../../../../test/support/postgres.ts';
import { PG_ANSWER_WAIT_MS } from '../../src/storage/database.ts';
import { type DeviceLinkFixture, freshCsr, startDeviceLinkFixture } from './fixture.ts';

const ENROLL = '/.well-known/est/fio-device-gateway-ca/simpleenroll';
const CSR_HEADERS = { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' };
const SILENT =
  /PostgreSQL database did not answer in time, so keyferryd dropped the connection.*retry later.*check the database server and the network/;

/**
 * keyferryd on a PostgreSQL that stops answering with its connections still open (a frozen host
 * or virtual machine, a network dropping packets without a reset): here the backend of
 * keyferryd's one pool connection, stopped with SIGSTOP, so PostgreSQL's own statement_timeout
 * cannot fire either. Before keyferryd bounded its wait for an answer, a request on that
 * connection waited until TCP gave up (~15 minutes), and every request after it for a free
 * connection.
 */
describe('keyferryd while its PostgreSQL backend does not answer (postgres)', { timeout: 120_000 }, () => {
  let f: DeviceLinkFixture;
  /** The test's own connection, to look at the database and find keyferryd's backends. */
  let look: pg.Client;
  const lines: Array<{ level: number; msg: string; code?: string }> = [];

  beforeAll(async () => {
    const url = await createDatabase(inject('postgresUrl'), `frozen_${process.pid}_${Date.now()}`);
    const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
    f = await startDeviceLinkFixture(
      'postgres',
      { storage: { kind: 'postgres', url, poolSize: 1 } },
      // no bulk-job poll takes the pool's one connection meanwhile
      { log, jobs: { pollMs: 3_600_000 } },
    );
    look = new pg.Client({ connectionString: url });
    await look.connect();
  });
  afterAll(async () => {
    await look?.end();
    await f?.svc.stop();
  });

  it('a request on the silent connection is refused 503 once the wait ends, nothing kept; the next one gets a new connection', async () => {
    const device = await f.device();
    expect((await f.call(device, { path: '/device-link/v1/manifest' })).status).toBe(200);
    const { rows } = await look.query<{ pid: number }>(
      `select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()
        and backend_type = 'client backend'`,
    );
    // the pool's one connection, idle since the manifest
    expect(rows).toHaveLength(1);
    const frozen = rows[0]!.pid;
    const before = await tableDigest(look);
    const errorsBefore = lines.filter((l) => l.level === 50).length;

    process.kill(frozen, 'SIGSTOP');
    try {
      const started = performance.now();
      const refused = await f.call(device, {
        method: 'POST',
        path: ENROLL,
        headers: CSR_HEADERS,
        body: (await freshCsr()).base64,
      });
      const waited = performance.now() - started;
      expect(refused.status, refused.text).toBe(503);
      expect(refused.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(refused.json).toMatchObject({ code: 'unavailable', detail: expect.stringMatching(SILENT) });
      expect(waited).toBeGreaterThanOrEqual(PG_ANSWER_WAIT_MS - 100);
      expect(await tableDigest(look)).toEqual(before);
      // one error line for the burst, saying what to check
      const errors = lines.filter((l) => l.level === 50).slice(errorsBefore);
      expect(errors.map((l) => [l.code, l.msg])).toEqual([
        [
          'no_answer',
          expect.stringMatching(/^database busy .*check the PostgreSQL server on .*and the network/),
        ],
      ]);

      // The stopped backend still is: the dropped connection's place went to a new one.
      expect((await look.query('select 1 from pg_stat_activity where pid = $1', [frozen])).rowCount).toBe(1);
      const enrolled = await f.call(device, {
        method: 'POST',
        path: ENROLL,
        headers: CSR_HEADERS,
        body: (await freshCsr()).base64,
      });
      expect(enrolled.status, enrolled.text).toBe(200);
    } finally {
      process.kill(frozen, 'SIGCONT');
    }
    // resumed, the old backend finds its connection gone and ends, rolling back what it had begun
    await expect
      .poll(
        async () => (await look.query('select 1 from pg_stat_activity where pid = $1', [frozen])).rowCount,
        {
          timeout: 10_000,
        },
      )
      .toBe(0);
    // the device has the second enrollment's certificate, and only it
    const live = await look.query(
      `select serial_hex from certificates where subject_cn = $1 and revoked_at is null`,
      [device.uid.hex],
    );
    expect(live.rowCount).toBe(1);
  });
});

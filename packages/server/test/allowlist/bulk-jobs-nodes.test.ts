import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { sql } from 'kysely';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { type Db, openDatabase } from '../../src/storage/database.ts';
import { startTestService, type TestService } from '../support/service.ts';
import { deviceRowCount, sequentialIds } from './fixtures.ts';

const SE050 = '935389312472';
const BASE = '/ota/factories/demo';
const JOBS = { chunk: 100, pollMs: 50 };

/**
 * Two keyferryd on one PostgreSQL share the bulk job queue. A row lock on the factory's plan
 * (every chunk takes it) holds node A inside its first chunk, so the test stops or outlives A
 * at a known point instead of racing it.
 */
describe('bulk jobs across two nodes on postgres', () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  });

  async function node(options: Parameters<typeof startTestService>[2] = {}): Promise<TestService> {
    const svc = await startTestService('postgres', {}, options);
    // a test may stop a node itself; closing twice must not reach the service twice
    const close = svc.service.close;
    let closed: Promise<void> | undefined;
    svc.service.close = () => (closed ??= close());
    // close, not stop: the other node reads this one's master key file
    cleanup.push(async () => {
      await svc.service.close();
      rmSync(svc.dataDir, { recursive: true, force: true });
    });
    return svc;
  }

  /** A database handle of the test's own, so rows stay readable after a node closes. */
  async function observe(svc: TestService): Promise<Db> {
    const database = await openDatabase(svc.service.ctx.config.storage, tmpdir());
    cleanup.push(() => database.close());
    return database.db;
  }

  async function holdPlanLock(svc: TestService): Promise<() => Promise<void>> {
    const storage = svc.service.ctx.config.storage;
    if (storage.kind !== 'postgres') throw new Error('postgres only');
    const client = new pg.Client({ connectionString: storage.url });
    await client.connect();
    await client.query('BEGIN');
    await client.query('SELECT 1 FROM factory_el2g FOR UPDATE');
    return async () => {
      await client.query('COMMIT');
      await client.end();
    };
  }

  /** Sessions of this database blocked on a lock (node A's chunk, behind holdPlanLock). */
  async function sessionsWaitingOnALock(db: Db): Promise<number> {
    const { rows } = await sql<{ n: string }>`
      select count(*) as n from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock'`.execute(db);
    return Number(rows[0]?.n ?? 0);
  }

  const jobRow = (db: Db, id: string) =>
    db.selectFrom('bulk_jobs').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

  async function until<T>(read: () => Promise<T>, done: (value: T) => boolean): Promise<T> {
    for (;;) {
      const value = await read();
      if (done(value)) return value;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async function submit(svc: TestService, ids: string[]): Promise<string> {
    // the plan row exists once el2g is enabled; a small batch makes sure before the lock
    const res = await svc.call('POST', `${BASE}/el2g-proxy/device-jobs`, {
      body: { nc12: SE050, deviceIds: ids },
    });
    expect(res.status).toBe(202);
    return res.json.id;
  }

  const finished = (svc: TestService, id: string) =>
    until(
      async () => (await svc.call('GET', `${BASE}/el2g-proxy/device-jobs/${id}`)).json,
      (job) => job.status === 'done' || job.status === 'failed',
    );

  it('a job whose node stops mid-job is handed back and finished by the other node, each chunk once', async () => {
    const a = await node({ jobs: JOBS });
    const db = await observe(a);
    await finished(a, await submit(a, sequentialIds(1, 1)));
    const release = await holdPlanLock(a);
    const id = await submit(a, sequentialIds(1_000, 100));
    await until(
      () => jobRow(db, id),
      (row) => row.status === 'running',
    );
    // 'running' is set before the first chunk reaches the plan row: on a busy machine A could
    // still be between the two, and would then hand the job back with nothing processed
    await until(
      () => sessionsWaitingOnALock(db),
      (n) => n > 0,
    );
    const closing = a.service.close();
    await release();
    await closing;
    const handedBack = await jobRow(db, id);
    expect(handedBack).toMatchObject({ status: 'queued', processed: 100, lease_owner: null });

    const b = await node({ jobs: JOBS, sharedWith: a });
    const job = await finished(b, id);
    expect(job).toMatchObject({
      status: 'done',
      processed: 1_000,
      counts: { added: 1_000, alreadyPresent: 0, invalid: 0, inOtherGroup: 0, refused: 0 },
      error: null,
    });
    expect(await deviceRowCount(db)).toBe(1_001);
  });

  it('a job whose node stops answering is claimed again when its lease runs out; the old node writes nothing more', async () => {
    const a = await node({ jobs: { ...JOBS, leaseMs: 300 } });
    const db = await observe(a);
    await finished(a, await submit(a, sequentialIds(1, 1)));
    const release = await holdPlanLock(a);
    const id = await submit(a, sequentialIds(1_000, 100));
    const first = await until(
      () => jobRow(db, id),
      (row) => row.lease_owner !== null,
    );
    // B only polls: A's lease must expire before B may take the job
    const b = await node({ jobs: { ...JOBS, leaseMs: 60_000 }, sharedWith: a });
    const taken = await until(
      () => jobRow(db, id),
      (row) => row.lease_owner !== null && row.lease_owner !== first.lease_owner,
    );
    expect(Date.parse(taken.lease_until ?? '')).toBeGreaterThan(Date.parse(first.lease_until ?? ''));
    await release();
    const job = await finished(b, id);
    // A's chunk in flight may have committed before it saw the lease gone: it counts once as
    // already present when B adds it again, never as a second addition
    expect(job.status).toBe('done');
    expect(job.processed).toBe(1_000);
    expect(job.counts.added + job.counts.alreadyPresent).toBe(1_000);
    expect(job.counts.alreadyPresent).toBeLessThanOrEqual(JOBS.chunk);
    expect(await deviceRowCount(db)).toBe(1_001);
    // A no longer holds the lease, so nothing it does now reaches the row
    await a.service.close();
    expect(await jobRow(db, id)).toMatchObject({ status: 'done', processed: 1_000, lease_owner: null });
  });
});

import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type Fleet, makeDevices, provision, startFleet } from '../../bench/lib/device-link-load.ts';
import { childProcesses } from '../../bench/lib/process-stats.ts';
import { stateRank } from '../../packages/server/src/allowlist/device-state.ts';
import { openDatabase } from '../../packages/server/src/storage/database.ts';
import { sequentialIds } from '../../packages/server/test/allowlist/fixtures.ts';
import { createDatabase } from '../support/postgres.ts';
import { type DaemonProcess, PROCESS_TEST_TIMEOUT_MS, startKeyferryd } from '../support/processes.ts';

const SE050 = '935389312472';
const JOB_DEVICES = 1_200;

async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  for (let i = 0; i < 600; i++) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`gave up waiting for ${what}`);
}

type Api = (method: string, path: string, body?: unknown) => Promise<any>;

/**
 * A bulk import job (chunks of 250) submitted to a keyferryd whose two workers both poll for
 * jobs: one claims it, and every id is added once — a second run would find them present.
 */
async function bulkJobDoneOnce(api: Api): Promise<void> {
  const ids = sequentialIds(JOB_DEVICES, 7);
  const { id } = await api('POST', '/ota/factories/demo/el2g-proxy/device-jobs', {
    nc12: SE050,
    deviceIds: ids,
  });
  const job = await until('the job to end', async () => {
    const now = await api('GET', `/ota/factories/demo/el2g-proxy/device-jobs/${id}`);
    return now.status === 'done' || now.status === 'failed' ? now : undefined;
  });
  expect(job).toMatchObject({
    status: 'done',
    total: JOB_DEVICES,
    processed: JOB_DEVICES,
    counts: { added: JOB_DEVICES, alreadyPresent: 0, invalid: 0, inOtherGroup: 0, refused: 0 },
    error: null,
  });
}

/** keyferryd with `workers: 2` (KEYFERRY_WORKERS): one primary, two workers on one SQLite. */
describe('keyferryd with two workers', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let work: string;
  let daemon: DaemonProcess;
  let primary: number;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-workers-'));
    daemon = await startKeyferryd(join(work, 'data'), { env: { KEYFERRY_WORKERS: '2' } });
    primary = daemon.child.pid!;
  });
  afterAll(async () => {
    await daemon?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('runs two workers behind one set of addresses, ready and counted together', async () => {
    expect(childProcesses(primary)).toHaveLength(2);
    const ready = await fetch(`${daemon.listen.api}/readyz`);
    expect(ready.status).toBe(200);
    // every request lands on one worker or the other; the aggregated count holds them all
    for (let i = 0; i < 6; i++) expect((await fetch(`${daemon.listen.api}/healthz`)).status).toBe(200);
    const metrics = await (await fetch(`${daemon.listen.api}/metrics`)).text();
    const healthz = metrics
      .split('\n')
      .filter((l) => l.startsWith('keyferry_http_requests_total{') && l.includes('route="/healthz"'))
      .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    expect(healthz).toBe(6);
    // figures read from the database are taken from one worker, not summed over both
    expect(metrics).toMatch(/^keyferry_plan_devices_max\{factory="demo"\} 50000$/m);
  });

  it('runs a bulk import job once, though both workers poll for jobs', async () => {
    const token = readFileSync(join(work, 'data', 'demo.token'), 'utf8').trim();
    await bulkJobDoneOnce(async (method, path, body) => {
      const res = await fetch(daemon.listen.api + path, {
        method,
        headers: { 'osf-token': token, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      expect(res.ok, `${method} ${path}`).toBe(true);
      return res.json();
    });
  });

  it('starts another worker when one is killed, on the same addresses', async () => {
    const [victim] = childProcesses(primary);
    process.kill(victim!, 'SIGKILL');
    const now = await until('a replacement worker', () => {
      const pids = childProcesses(primary);
      return pids.length === 2 && !pids.includes(victim!) ? pids : undefined;
    });
    expect(now).not.toContain(victim);
    expect(JSON.parse(readFileSync(join(work, 'data', 'listen.json'), 'utf8'))).toEqual(daemon.listen);
    expect((await fetch(`${daemon.listen.api}/readyz`)).status).toBe(200);
  });

  it('stops every worker on SIGTERM and removes listen.json', async () => {
    const workers = childProcesses(primary);
    expect(await daemon.stop()).toBe(0);
    expect(existsSync(join(work, 'data', 'listen.json'))).toBe(false);
    for (const pid of workers) expect(existsSync(`/proc/${pid}`)).toBe(false);
  });
});

/** SIGTERM reaching the primary while a replacement worker is still starting. */
describe('keyferryd with two workers, stopped while a worker starts', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  let work: string;
  let daemon: DaemonProcess;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-workers-stop-'));
    daemon = await startKeyferryd(join(work, 'data'), { env: { KEYFERRY_WORKERS: '2' } });
  });
  afterAll(async () => {
    if (daemon?.child.exitCode === null) daemon.child.kill('SIGKILL');
    rmSync(work, { recursive: true, force: true });
  });

  it('stops the starting worker at once, not after the grace period', async () => {
    const primary = daemon.child.pid!;
    const before = childProcesses(primary);
    process.kill(before[0]!, 'SIGKILL');
    // the replacement's process exists a few hundred ms before it listens: signal in between
    let replacement: number | undefined;
    for (let i = 0; i < 60_000 && replacement === undefined; i++) {
      replacement = childProcesses(primary).find((pid) => !before.includes(pid));
      if (replacement === undefined) await new Promise((r) => setTimeout(r, 5));
    }
    expect(replacement).toBeDefined();
    expect(await daemon.stop()).toBe(0);
    // a worker that missed the word would have been killed STOP_GRACE_MS later, and said so
    expect(daemon.stdout() + daemon.stderr()).not.toMatch(/did not stop within/);
    expect(existsSync(`/proc/${replacement}`)).toBe(false);
  });
});

/**
 * Two workers on PostgreSQL: simulated devices provisioned through the real device-link (the
 * bench's load generator; the primary hands connections to both workers), and a bulk
 * import job done once.
 */
describe('keyferryd with two workers on PostgreSQL', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  const DEVICES = 24;
  let work: string;
  let url: string;
  let fleet: Fleet;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-workers-pg-'));
    url = await createDatabase(inject('postgresUrl'), `workers_${process.pid}`);
    fleet = await startFleet(join(work, 'data'), { storageUrl: url, workers: 2 });
  });
  afterAll(async () => {
    await fleet?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it(`provisions ${DEVICES} devices, each once`, async () => {
    expect(fleet.pids).toHaveLength(3);
    const devices = await makeDevices(fleet, DEVICES);
    const run = await provision(fleet, devices, 6);
    expect(run.failures.lines()).toEqual([]);
    expect(run.provisioned).toBe(DEVICES);
    const database = await openDatabase({ kind: 'postgres', url, poolSize: 2 }, work);
    try {
      const rows = await database.db.selectFrom('devices').select(['device_id', 'state_rank']).execute();
      expect(rows).toHaveLength(DEVICES);
      // none failed; each device's gateway object is provisioned, with one certificate (the
      // bench reports only that object, so a device with other objects assigned stays below
      // PROVISIONING_COMPLETED as a whole)
      expect(rows.filter((d) => d.state_rank < stateRank('GENERATION_COMPLETED'))).toEqual([]);
      const provisioned = await database.db
        .selectFrom('device_objects')
        .select('device_row_id')
        .where('state', '=', 'PROVISIONING_COMPLETED')
        .execute();
      expect(new Set(provisioned.map((r) => r.device_row_id)).size).toBe(DEVICES);
      const certs = await database.db.selectFrom('certificates').select('device_row_id').execute();
      expect(certs).toHaveLength(DEVICES);
      expect(new Set(certs.map((c) => c.device_row_id)).size).toBe(DEVICES);
    } finally {
      await database.close();
    }
  });

  it('runs a bulk import job once, though both workers poll for jobs', async () => {
    await bulkJobDoneOnce(fleet.api);
  });
});

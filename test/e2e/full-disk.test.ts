import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomUid } from '@keyferry/sim';
import SqliteDatabase from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  enrollCall,
  type Fleet,
  makeDevices,
  manifest,
  manifestCall,
  report,
  type SimDevice,
  simpleenroll,
  startFleet,
} from '../../bench/lib/device-link-load.ts';
import { exchange } from '../../bench/lib/keep-alive-client.ts';
import { parseProblem, problemError } from '../../packages/agent/src/device-link/problem.ts';
import { JOB_CHUNK } from '../../packages/server/src/allowlist/bulk-jobs.ts';
import type { Tables } from '../../packages/server/src/storage/tables.ts';
import { PROCESS_TEST_TIMEOUT_MS } from '../support/processes.ts';
import { provisioningCounts } from '../support/provisioning-checks.ts';
import { mountSmallDisk, type SmallDisk } from '../support/small-disk.ts';
import {
  asAnswer,
  errorLines,
  expectUnavailable,
  factoryApi,
  fleetAgents,
  KEYFERRYD_FULL,
} from '../support/storage-full.ts';

const SE050 = '935389312472';
/** A device allow-listed over the management API while the disk is full (refused) and after. */
const EXTRA = `0x${randomUid().hex}`;
/** Room left on the disk for a bulk job: its row and its claim fit, a chunk of devices does not. */
const JOB_ROOM = 128 * 1024;

/**
 * keyferryd (real process, its default SQLite) with its data dir on a small tmpfs that the
 * test fills: a write then fails with SQLITE_FULL. The WAL is truncated first (a checkpoint
 * from the test's own connection), so the very next write of keyferryd needs new space and
 * the refusals below are the full disk's, not some other failure's.
 */
describe('keyferryd on a full disk (SQLite)', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let work: string;
  let disk: SmallDisk;
  let fleet: Fleet;
  let token: string;
  let dbFile: string;
  let devices: SimDevice[];
  const { agentOf, destroy: destroyAgents } = fleetAgents(() => fleet);
  const api = (method: string, path: string, body?: unknown) => factoryApi(fleet, token)(method, path, body);
  const errors = () => errorLines(fleet.daemon);
  /**
   * Every committed page into the database file and the WAL cut to 0 bytes: SQLite's next
   * write appends to the WAL, which then needs space the disk no longer has.
   */
  const truncateWal = () => {
    const sqlite = new SqliteDatabase(dbFile, { fileMustExist: true });
    try {
      expect(sqlite.pragma('wal_checkpoint(TRUNCATE)')).toEqual([{ busy: 0, log: 0, checkpointed: 0 }]);
    } finally {
      sqlite.close();
    }
  };
  /** Submits a bulk job and waits (bounded) until it has finished; its view. */
  const runJob = async (deviceIds: string[]) => {
    const submitted = await api('POST', '/el2g-proxy/device-jobs', { nc12: SE050, deviceIds });
    expect(submitted.status, await submitted.clone().text()).toBe(202);
    const { id } = (await submitted.json()) as { id: string };
    for (let wait = 0; wait < 600; wait++) {
      const job = (await (await api('GET', `/el2g-proxy/device-jobs/${id}`)).json()) as { status: string };
      if (job.status !== 'queued' && job.status !== 'running') return job;
      await sleep(50);
    }
    throw new Error(`bulk job ${id} has not finished after 600 looks, 50 ms apart`);
  };
  /** A read-only look at the database, as an operator's sqlite3 would take it. */
  const inspect = <T>(look: (sqlite: SqliteDatabase.Database) => T): T => {
    const sqlite = new SqliteDatabase(dbFile, { readonly: true, fileMustExist: true });
    try {
      return look(sqlite);
    } finally {
      sqlite.close();
    }
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-full-disk-'));
    disk = mountSmallDisk(join(work, 'disk'), '32m');
    const dataDir = join(disk.dir, 'data');
    fleet = await startFleet(dataDir, {});
    token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
    dbFile = join(dataDir, 'keyferry.db');
    devices = await makeDevices(fleet, 3);
    // device 0 provisions before the disk fills; device 1 has had its manifest (its object
    // states written), so its next call is the enrollment itself
    const first = agentOf(devices[0]!);
    await manifest(fleet, first);
    await simpleenroll(fleet, first, devices[0]!);
    await report(fleet, first);
    await manifest(fleet, agentOf(devices[1]!));
    truncateWal();
    expect(disk.fill()).toBeGreaterThan(0);
  });
  afterAll(async () => {
    destroyAgents();
    await fleet?.stop();
    disk?.unmount();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('refuses writes with 503 unavailable saying the storage is full, changes nothing, logs it once', async () => {
    const before = inspect((db) => db.pragma('data_version', { simple: true }));
    const enroll = await exchange(enrollCall(fleet, agentOf(devices[1]!), devices[1]!));
    expectUnavailable(enroll, KEYFERRYD_FULL);
    // the agent retries it (transient), as it does any 5xx
    const { status, headers, text } = enroll;
    const problem = parseProblem(status, headers['content-type'] as string, Buffer.from(text));
    expect(problemError('enroll', problem, undefined).kind).toBe('transient');
    // a device's first call writes its object states: refused the same way
    expectUnavailable(await exchange(manifestCall(fleet, agentOf(devices[2]!))), KEYFERRYD_FULL);
    // and a management write: allow-list add
    expectUnavailable(
      await asAnswer(await api('POST', '/el2g/devices/', { 'product-id': SE050, devices: [EXTRA] })),
      KEYFERRYD_FULL,
    );
    // nothing was committed meanwhile (data_version moves with any other connection's commit)
    const after = inspect((db) => ({
      version: db.pragma('data_version', { simple: true }),
      integrity: db.pragma('integrity_check', { simple: true }),
    }));
    expect(after).toEqual({ version: before, integrity: 'ok' });
    // one error line for the burst, naming the cause and the file; no stack per request, no
    // failed audit write
    const lines = errors();
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({
      code: 'SQLITE_FULL',
      database: dbFile,
      msg: expect.stringMatching(/^storage full \(SQLITE_FULL: database or disk is full\): .*free space/),
    });
    expect(fleet.daemon.child.exitCode).toBeNull();
  });

  it('answers reads that need no write while the disk is full', async () => {
    expect((await fetch(`${fleet.daemon.listen.api}/healthz`)).status).toBe(200);
    expect((await fetch(`${fleet.daemon.listen.api}/readyz`)).status).toBe(200);
    const listed = await api('GET', '/el2g/devices/');
    expect(listed.status).toBe(200);
    expect(await listed.json()).toHaveLength(devices.length);
    expect((await fetch(`${fleet.daemon.listen.api}/metrics`)).status).toBe(200);
    const cacerts = await exchange({
      ...manifestCall(fleet, agentOf(devices[2]!)),
      path: '/.well-known/est/cacerts',
    });
    expect(cacerts.status, cacerts.text).toBe(200);
  });

  it('writes again once space is freed, without a restart: the refused devices provision on their retry', async () => {
    disk.free();
    const pid = fleet.daemon.child.pid;
    for (const device of devices.slice(1)) {
      const agent = agentOf(device);
      await manifest(fleet, agent);
      await simpleenroll(fleet, agent, device);
      await report(fleet, agent);
    }
    const added = await api('POST', '/el2g/devices/', { 'product-id': SE050, devices: [EXTRA] });
    expect(added.status, await added.clone().text()).toBe(200);
    expect(fleet.daemon.child.pid).toBe(pid);
    expect(fleet.daemon.child.exitCode).toBeNull();
    const sqlite = new SqliteDatabase(dbFile, { readonly: true, fileMustExist: true });
    const db = new Kysely<Tables>({ dialect: new SqliteDialect({ database: sqlite }) });
    try {
      expect(sqlite.pragma('integrity_check', { simple: true })).toBe('ok');
      // (completed counts devices whose every object is done: the demo plan has more objects
      // than the gateway's, which is all these devices enroll)
      expect(await provisioningCounts(db)).toMatchObject({
        devices: 4,
        duplicateLiveCerts: 0,
        auditGaps: 0,
        certificates: 3,
      });
      // every certificate's object reached the state its enrollment writes with it
      const states = await db
        .selectFrom('certificates')
        .innerJoin('device_objects', (join) =>
          join
            .onRef('device_objects.device_row_id', '=', 'certificates.device_row_id')
            .onRef('device_objects.secure_object_id', '=', 'certificates.secure_object_id'),
        )
        .select('device_objects.state')
        .execute();
      expect(states.map((s) => s.state)).toEqual([
        'PROVISIONING_COMPLETED',
        'PROVISIONING_COMPLETED',
        'PROVISIONING_COMPLETED',
      ]);
    } finally {
      await db.destroy();
    }
    // still the one error line of the burst (nothing else failed meanwhile)
    expect(errors()).toHaveLength(1);
  });
  it('fails a bulk job that finds the disk full: its recorded error says the storage is full, logged in the burst, not a stack per job', async () => {
    const linesBefore = errors().length;
    truncateWal();
    expect(disk.fill()).toBeGreaterThan(0);
    // room for the job's row and its claim, not for a chunk of devices with their audit rows
    disk.release(JOB_ROOM);
    const ids = Array.from({ length: JOB_CHUNK }, () => `0x${randomUid().hex}`);
    const job = await runJob(ids);
    expect(job).toMatchObject({
      status: 'failed',
      processed: 0,
      counts: { added: 0, alreadyPresent: 0 },
      error: { code: 'unavailable', message: expect.stringMatching(KEYFERRYD_FULL) },
    });
    // no 'bulk job failed' line with a stack: at most the burst's storage-full line (none here,
    // as the burst of the first test goes on)
    for (const line of errors().slice(linesBefore)) {
      expect(JSON.parse(line)).toMatchObject({
        code: 'SQLITE_FULL',
        msg: expect.stringMatching(/^storage full/),
      });
    }
    // the failed chunk was rolled back; once space is freed, the same ids submitted again are all added
    disk.free();
    const listed = (await (await api('GET', '/el2g/devices/')).json()) as Array<{ id: string }>;
    expect(listed.map((d) => d.id)).not.toContain(ids[0]);
    expect(await runJob(ids)).toMatchObject({
      status: 'done',
      processed: ids.length,
      counts: { added: ids.length },
      error: null,
    });
  });
});

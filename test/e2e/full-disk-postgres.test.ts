import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomUid } from '@keyferry/sim';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  enrollCall,
  type Fleet,
  makeDevices,
  manifest,
  report,
  type SimDevice,
  simpleenroll,
  startFleet,
} from '../../bench/lib/device-link-load.ts';
import { type Answer, exchange } from '../../bench/lib/keep-alive-client.ts';
import type { Tables } from '../../packages/server/src/storage/tables.ts';
import { createDatabase, type PostgresCluster, startPostgres, tableDigest } from '../support/postgres.ts';
import { PROCESS_TEST_TIMEOUT_MS } from '../support/processes.ts';
import { provisioningCounts } from '../support/provisioning-checks.ts';
import { mountSmallDisk, type SmallDisk } from '../support/small-disk.ts';
import {
  asAnswer,
  DATABASE_GONE,
  errorLines,
  expectUnavailable,
  factoryApi,
  fleetAgents,
  POSTGRES_FULL,
} from '../support/storage-full.ts';

const SE050 = '935389312472';
/** Allow-list adds the test sends at most before one must need a new page. */
const MAX_ADDS = 200;

/**
 * keyferryd (real process, its data dir on the ordinary disk) on a throwaway PostgreSQL cluster
 * whose data directory is on a small tmpfs that the test fills. What PostgreSQL does then
 * depends on what the write needs: a row that fits in a page PostgreSQL already holds still
 * commits; one that needs a table, index or free-space map to grow fails with SQLSTATE 53100
 * ("could not extend file ...: No space left on device") and the transaction rolls back; WAL
 * that needs a new segment file makes PostgreSQL PANIC. The test starts a fresh WAL segment
 * (pg_switch_wal, then a CHECKPOINT, which also recycles the old one as the next) before it
 * fills the disk, so the few requests below, a few kilobytes of WAL, stay inside it: what it
 * measures is the 53100 path, the one a full disk takes first.
 */
describe('keyferryd on a full disk (PostgreSQL)', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let work: string;
  let disk: SmallDisk;
  let cluster: PostgresCluster;
  let fleet: Fleet;
  let token: string;
  let url: string;
  /** The test's own connection, as an operator's psql. */
  let client: pg.Client;
  let devices: SimDevice[];
  /** Allow-listed while the disk was full: those answered 200 and the one refused. */
  const addedWhileFull: string[] = [];
  let refusedId: string;
  const { agentOf, destroy: destroyAgents } = fleetAgents(() => fleet);
  const api = (method: string, path: string, body?: unknown) => factoryApi(fleet, token)(method, path, body);
  const add = async (id: string): Promise<Answer> =>
    asAnswer(await api('POST', '/el2g/devices/', { 'product-id': SE050, devices: [id] }));
  /** Every row of every keyferry table, digested: equal digests, nothing committed between. */
  const digest = () => tableDigest(client);

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-full-pg-'));
    // the cluster runs as the postgres user, who must get to its dir on the tmpfs
    chmodSync(work, 0o711);
    disk = mountSmallDisk(join(work, 'disk'), '96m');
    chmodSync(disk.dir, 0o711);
    cluster = await startPostgres({ parent: disk.dir });
    url = await createDatabase(cluster.url, 'keyferry_full_disk');
    const dataDir = join(work, 'data');
    fleet = await startFleet(dataDir, { storageUrl: url });
    token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
    client = new pg.Client({ connectionString: url });
    client.on('error', () => {});
    await client.connect();
    // device 0 provisions before the disk fills; the others have had their manifest, so their
    // next call is the enrollment itself
    devices = await makeDevices(fleet, 3);
    const first = agentOf(devices[0]!);
    await manifest(fleet, first);
    await simpleenroll(fleet, first, devices[0]!);
    await report(fleet, first);
    for (const device of devices.slice(1)) await manifest(fleet, agentOf(device));
    await client.query('select pg_switch_wal()');
    await client.query('checkpoint');
    const wal = await client.query<{ file_offset: number }>(
      'select file_offset from pg_walfile_name_offset(pg_current_wal_lsn())',
    );
    expect(wal.rows[0]!.file_offset).toBeLessThan(1 << 20);
    expect(disk.fill()).toBeGreaterThan(0);
  });
  afterAll(async () => {
    destroyAgents();
    await client?.end().catch(() => {});
    await fleet?.stop();
    try {
      cluster?.stop();
    } finally {
      disk?.unmount();
      if (work) rmSync(work, { recursive: true, force: true });
    }
  });

  it('commits what fits in pages PostgreSQL holds; the first write that needs a new page is refused 503 naming the database server, and every write after it, nothing committed, logged once', async () => {
    // allow-list adds, one device each, until one needs a table (or its index, or its free-space
    // map) to grow: a handful fit in the last pages' room
    for (let n = 0; n < MAX_ADDS; n++) {
      const id = `0x${randomUid().hex}`;
      const answer = await add(id);
      if (answer.status === 200) {
        addedWhileFull.push(id);
        continue;
      }
      expectUnavailable(answer, POSTGRES_FULL);
      refusedId = id;
      break;
    }
    expect(refusedId, `${MAX_ADDS} allow-list adds on a full disk all committed`).toBeDefined();
    const before = await digest();
    // a device's enrollment: refused the same way, and the agent would retry it (a 5xx)
    for (const device of devices.slice(1)) {
      expectUnavailable(await exchange(enrollCall(fleet, agentOf(device), device)), POSTGRES_FULL);
    }
    expectUnavailable(await add(refusedId), POSTGRES_FULL);
    // nothing of any refused request was committed, not even an audit row
    expect(await digest()).toEqual(before);
    // one error line for the burst, naming the SQLSTATE, PostgreSQL's message and the database
    // (host, port, name; never the password); no stack per request
    const lines = errorLines(fleet.daemon);
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({
      code: '53100',
      cause: expect.stringMatching(/^could not extend file ".*": No space left on device$/),
      database: `127.0.0.1:${cluster.port}/keyferry_full_disk`,
      msg: expect.stringMatching(
        /^storage full \(53100: could not extend file .*\): .*free space on the disk holding the PostgreSQL server's data directory \(127\.0\.0\.1:\d+\/keyferry_full_disk\)/,
      ),
    });
    expect(lines[0]).not.toContain('keyferry:keyferry');
    expect(fleet.daemon.child.exitCode).toBeNull();
  });

  it('answers reads while the database disk is full', async () => {
    expect((await fetch(`${fleet.daemon.listen.api}/healthz`)).status).toBe(200);
    expect((await fetch(`${fleet.daemon.listen.api}/readyz`)).status).toBe(200);
    const listed = await api('GET', '/el2g/devices/');
    expect(listed.status).toBe(200);
    const ids = ((await listed.json()) as Array<{ id: string }>).map((d) => d.id);
    expect(ids).toHaveLength(devices.length + addedWhileFull.length);
    expect(ids).not.toContain(refusedId);
  });

  it('writes again once space is freed, without a restart of keyferryd or PostgreSQL', async () => {
    disk.free();
    const pid = fleet.daemon.child.pid;
    for (const device of devices.slice(1)) {
      const agent = agentOf(device);
      await simpleenroll(fleet, agent, device);
      await report(fleet, agent);
    }
    const added = await add(refusedId);
    expect(added.status, added.text).toBe(200);
    expect(fleet.daemon.child.pid).toBe(pid);
    expect(fleet.daemon.child.exitCode).toBeNull();
    const db = new Kysely<Tables>({
      dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url }) }),
    });
    try {
      expect(await provisioningCounts(db)).toMatchObject({
        devices: devices.length + addedWhileFull.length + 1,
        duplicateLiveCerts: 0,
        auditGaps: 0,
        certificates: devices.length,
      });
    } finally {
      await db.destroy();
    }
    expect(errorLines(fleet.daemon)).toHaveLength(1);
  });
  it('when WAL needs a new segment on the full disk, PostgreSQL PANICs and shuts down: keyferryd refuses 503 saying the database is not reachable, logs it once, and works again without a restart once space is freed and PostgreSQL started', async () => {
    const linesBefore = errorLines(fleet.daemon).length;
    // a device allow-listed and past its manifest, whose enrollment comes while PostgreSQL is down
    const [late] = await makeDevices(fleet, 1);
    await manifest(fleet, agentOf(late!));
    const scratch = new pg.Client({ connectionString: url });
    scratch.on('error', () => {});
    await scratch.connect();
    expect(disk.fill()).toBeGreaterThan(0);
    // WAL past the current segment and the recycled one, from the test's own connection: 1 MB
    // records that need no table to grow
    let stopped: unknown;
    for (let n = 0; n < 100 && stopped === undefined; n++) {
      await scratch
        .query("select pg_logical_emit_message(false, 'fill', repeat('x', 1048576))")
        .catch((e: unknown) => {
          stopped = e;
        });
    }
    await scratch.end().catch(() => {});
    expect(stopped, '100 MB of WAL on a full 96 MB disk').toBeDefined();
    // PostgreSQL's account: the PANIC, then crash recovery with no room for its WAL either
    let pgLog = '';
    for (let look = 0; look < 600 && !/database system is shut down/.test(pgLog); look++) {
      await sleep(50);
      pgLog = readFileSync(cluster.log, 'utf8');
    }
    expect(pgLog).toMatch(
      /PANIC: {2}could not write to file "pg_wal\/xlogtemp\.\d+": No space left on device/,
    );
    expect(pgLog).toMatch(/shutting down due to startup process failure\n.*database system is shut down/);

    expectUnavailable(await exchange(enrollCall(fleet, agentOf(late!), late!)), DATABASE_GONE);
    const id = `0x${randomUid().hex}`;
    expectUnavailable(await add(id), DATABASE_GONE);
    const ready = await fetch(`${fleet.daemon.listen.api}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toEqual({ status: 'unavailable', reason: 'database not reachable' });
    expect((await fetch(`${fleet.daemon.listen.api}/healthz`)).status).toBe(200);
    const lines = errorLines(fleet.daemon).slice(linesBefore);
    expect(lines.map((l) => JSON.parse(l).msg)).toEqual([
      expect.stringMatching(/^database not reachable \(/),
    ]);
    expect(JSON.parse(lines[0]!)).toMatchObject({ database: `127.0.0.1:${cluster.port}/keyferry_full_disk` });

    disk.free();
    cluster.start();
    const pid = fleet.daemon.child.pid;
    const agent = agentOf(late!);
    await simpleenroll(fleet, agent, late!);
    await report(fleet, agent);
    const added = await add(id);
    expect(added.status, added.text).toBe(200);
    expect(fleet.daemon.child.pid).toBe(pid);
    expect(errorLines(fleet.daemon).slice(linesBefore)).toHaveLength(1);
  });
});

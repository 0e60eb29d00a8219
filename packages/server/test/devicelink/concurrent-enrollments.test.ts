import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS } from '../support/databases.ts';
import { type DeviceLinkFixture, freshCsr, startDeviceLinkFixture, type TestDevice } from './fixture.ts';

const ENROLL = '/.well-known/est/fio-device-gateway-ca/simpleenroll';
const CSR_HEADERS = { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' };

/**
 * An agent that retries while its first request is still running, or two agents on one device:
 * enrollments of one device at once are decided one after the other, on either backend.
 */
describe.each(BACKENDS)('enrollments of one device at once (%s)', (backend) => {
  let f: DeviceLinkFixture;

  beforeAll(async () => {
    f = await startDeviceLinkFixture(backend);
  });
  afterAll(async () => {
    await f?.svc.stop();
  });

  const enrollAtOnce = (device: TestDevice, bodies: string[]) =>
    Promise.all(
      bodies.map((body) => f.call(device, { method: 'POST', path: ENROLL, headers: CSR_HEADERS, body })),
    );
  const certificates = (device: TestDevice) =>
    f.svc.service.ctx.database.db
      .selectFrom('certificates')
      .select(['serial_hex', 'revoked_at'])
      .where('subject_cn', '=', device.uid.hex)
      .orderBy('id')
      .execute();

  it('four new keys at once: one certificate stays live, the others are revoked as superseded', async () => {
    const device = await f.device();
    await f.call(device, { path: '/device-link/v1/manifest' });
    const csrs = await Promise.all([1, 2, 3, 4].map(() => freshCsr()));
    const answers = await enrollAtOnce(
      device,
      csrs.map((c) => c.base64),
    );
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
    const rows = await certificates(device);
    expect(rows).toHaveLength(4);
    expect(rows.filter((r) => r.revoked_at === null)).toHaveLength(1);
  });

  it('one CSR sent four times at once: one certificate, answered four times', async () => {
    const device = await f.device();
    await f.call(device, { path: '/device-link/v1/manifest' });
    const csr = await freshCsr();
    const answers = await enrollAtOnce(device, [csr.base64, csr.base64, csr.base64, csr.base64]);
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
    expect(new Set(answers.map((a) => a.text)).size).toBe(1);
    const rows = await certificates(device);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.revoked_at).toBeNull();
  });
});

/**
 * PostgreSQL: an enrollment's write is made only while the device's enrollment_count is the one
 * it read (migration 019). These hold the device's row locked from a connection of their own, so
 * that enrollments read and then wait at their write, and decide when the other side commits.
 */
describe('an enrollment overtaken between its read and its write (postgres)', () => {
  let f: DeviceLinkFixture;
  const clients: pg.Client[] = [];

  beforeAll(async () => {
    f = await startDeviceLinkFixture('postgres');
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end()));
    await f?.svc.stop();
  });

  /** A connection of the test's own, its backend's pid, in a transaction. */
  async function connection() {
    const storage = f.svc.service.ctx.config.storage;
    if (storage.kind !== 'postgres') throw new Error('postgres only');
    const client = new pg.Client({ connectionString: storage.url });
    clients.push(client);
    await client.connect();
    const pid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
    await client.query('begin');
    return { client, pid };
  }

  /** Until the test's own `sql` is true, polled. */
  async function until(condition: ReturnType<typeof sql<unknown>>) {
    const db = f.svc.service.ctx.database.db;
    while ((await condition.execute(db)).rows.length === 0) await new Promise((r) => setTimeout(r, 10));
  }

  /** Until `n` enrollment writes (the statement with the `touched` CTE) wait for a lock. */
  const writesWaiting = (n: number) =>
    until(sql`select 1 from pg_stat_activity where datname = current_database()
      and query like '%"touched"%' and wait_event_type = 'Lock' having count(*) >= ${n}`);

  const deviceRow = async (device: TestDevice) =>
    await f.svc.service.ctx.database.db
      .selectFrom('devices')
      .select(['id', 'enrollment_count'])
      .where('device_id', '=', device.uid.decimal)
      .where('deleted_at', 'is', null)
      .executeTakeFirstOrThrow();
  const auditActionsAfter = (id: number) =>
    f.svc.service.ctx.database.db
      .selectFrom('audit_log')
      .select(['id', 'action'])
      .where('id', '>', id)
      .orderBy('id')
      .execute();
  const enroll = (device: TestDevice, body: string) =>
    f.call(device, { method: 'POST', path: ENROLL, headers: CSR_HEADERS, body });
  const liveCertificates = async (device: TestDevice) =>
    (
      await f.svc.service.ctx.database.db
        .selectFrom('certificates')
        .select('serial_hex')
        .where('subject_cn', '=', device.uid.hex)
        .where('revoked_at', 'is', null)
        .execute()
    ).map((r) => r.serial_hex);

  it('two new keys whose writes wait together: the second reads again and supersedes the first', async () => {
    const device = await f.device();
    await f.call(device, { path: '/device-link/v1/manifest' });
    const { id } = await deviceRow(device);
    const lock = await connection();
    await lock.client.query('update devices set last_connection = last_connection where id = $1', [id]);
    const [a, b] = await Promise.all([freshCsr(), freshCsr()]);
    const answers = Promise.all([enroll(device, a.base64), enroll(device, b.base64)]);
    // both read no certificate and issued one; both wait to write it
    await writesWaiting(2);
    await lock.client.query('commit');
    expect((await answers).map((r) => r.status)).toEqual([200, 200]);
    const all = await f.svc.service.ctx.database.db
      .selectFrom('certificates')
      .select(['revoked_at', 'revocation_reason'])
      .where('subject_cn', '=', device.uid.hex)
      .orderBy('id')
      .execute();
    expect(all.map((c) => c.revocation_reason)).toEqual(['superseded', null]);
    expect((await deviceRow(device)).enrollment_count).toBe(2);
  });

  it('answers 429 naming the object after eight enrollments overtook it, and writes nothing', async () => {
    const device = await f.device();
    await f.call(device, { path: '/device-link/v1/manifest' });
    const { id, enrollment_count: before } = await deviceRow(device);
    const states = await f.states(device);
    const lastAudit = await auditActionsAfter(0).then((rows) => rows.at(-1)?.id ?? 0);
    // Each overtaking enrollment is a transaction that holds audit_log (EXCLUSIVE: reads go on,
    // the enrollment's write waits), counts an enrollment and commits once the write waits for
    // it. The next one asks for audit_log before that commit: queued behind the waiting write, it
    // is handed the lock when that write has failed, so the next try's write waits for it too.
    const overtaking = async () => {
      const t = await connection();
      const held = t.client
        .query('lock table audit_log in exclusive mode')
        .then(() =>
          t.client.query('update devices set enrollment_count = enrollment_count + 1 where id = $1', [id]),
        );
      await until(sql`select 1 from pg_locks where pid = ${t.pid} and relation = 'audit_log'::regclass`);
      const commit = async () => {
        await held;
        await t.client.query('commit');
      };
      return { pid: t.pid, commit };
    };
    const waitsFor = (pid: number) =>
      until(sql`select 1 from pg_stat_activity where datname = current_database()
        and query like '%"touched"%' and ${pid} = any(pg_blocking_pids(pid))`);
    let holder = await overtaking();
    const answer = enroll(device, (await freshCsr()).base64);
    for (let n = 1; n <= 8; n++) {
      await waitsFor(holder.pid);
      const next = n < 8 ? await overtaking() : undefined;
      await holder.commit();
      if (next) holder = next;
    }
    const refused = await answer;
    expect(refused.status, refused.text).toBe(429);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(refused.text).toContain('fio-device-gateway-ca');
    expect(refused.text).toContain('retry');
    expect(await liveCertificates(device)).toEqual([]);
    expect((await deviceRow(device)).enrollment_count).toBe(before + 8);
    expect(await f.states(device)).toEqual(states);
    // the refusal's own audit row only: no enrollment was recorded
    expect((await auditActionsAfter(lastAudit)).map((r) => r.action)).toEqual(['device-link.refused']);
  });
});

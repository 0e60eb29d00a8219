import { join } from 'node:path';
import { randomUid } from '@keyferry/sim';
import SqliteDatabase from 'better-sqlite3';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { JOB_CHUNK } from '../../src/allowlist/bulk-jobs.ts';
import { statementsSent } from '../../src/storage/statement-count.ts';
import { type DeviceLinkFixture, freshCsr, startDeviceLinkFixture } from './fixture.ts';

/**
 * The bulk job's chunks go through addDevices: the test takes the write lock (below) as the
 * second chunk begins, after the first has committed. Only the moment is the test's; every
 * chunk's write is the real one.
 */
const lockAtChunk = vi.hoisted(() => ({ chunk: 0, calls: 0, take: () => {} }));
vi.mock('../../src/allowlist/allow-list.ts', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../src/allowlist/allow-list.ts')>();
  return {
    ...real,
    addDevices: (...args: Parameters<typeof real.addDevices>) => {
      if (++lockAtChunk.calls === lockAtChunk.chunk) lockAtChunk.take();
      return real.addDevices(...args);
    },
  };
});

const ENROLL = '/.well-known/est/fio-device-gateway-ca/simpleenroll';
const CSR_HEADERS = { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' };
const BUSY =
  /SQLite database is busy: another process holds its write lock, so this request changed nothing: retry/;

/**
 * keyferryd on SQLite while another connection to its file (an operator's sqlite3 shell, another
 * process) holds the write lock in an open transaction. Its wait is bounded (5 s, on timers);
 * past it SQLite answers SQLITE_BUSY, which keyferryd answered 500 internal (after waiting
 * again for the refusal's audit row) until it got the busy refusal PostgreSQL's lock_timeout
 * gets (database-busy.test.ts).
 */
describe('keyferryd while another connection holds the SQLite write lock', { timeout: 120_000 }, () => {
  let f: DeviceLinkFixture;
  let other: SqliteDatabase.Database;
  const lines: Array<{ level: number; msg: string; code?: string }> = [];
  /** Called with each log line as keyferryd writes it (synchronously, in its own turn). */
  let onLine: (line: { msg: string }) => void = () => {};

  beforeAll(async () => {
    const log = pino(
      { level: 'info' },
      {
        write: (s: string) => {
          const line = JSON.parse(s);
          lines.push(line);
          onLine(line);
        },
      },
    );
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

  it('the wait for the lock holds only the request: the process answers meanwhile, and the enrollment commits once the lock is released', async () => {
    const device = await f.device();
    expect((await f.call(device, { path: '/device-link/v1/manifest' })).status).toBe(200);
    const csr = await freshCsr();
    const certificatesBefore = await f.count('certificates');
    other.exec('BEGIN IMMEDIATE');
    const sentBefore = statementsSent();
    let answered = false;
    const enrolling = f
      .call(device, { method: 'POST', path: ENROLL, headers: CSR_HEADERS, body: csr.base64 })
      .finally(() => {
        answered = true;
      });
    // The enrollment's BEGIN IMMEDIATE is tried again and again while this test's own timers run.
    // Waited for inside SQLite's busy handler, the process (this test with it) stopped until the
    // 5 s bound refused it 503.
    await vi.waitFor(() => expect(statementsSent() - sentBefore).toBeGreaterThan(5), {
      timeout: 4_000,
      interval: 5,
    });
    const health = await fetch(`${f.svc.url}/healthz`);
    expect(health.status).toBe(200);
    expect(answered).toBe(false);
    expect(other.inTransaction).toBe(true);

    other.exec('ROLLBACK');
    const enrolled = await enrolling;
    expect(enrolled.status, enrolled.text).toBe(200);
    expect(await f.count('certificates')).toBe(certificatesBefore + 1);
  });

  it('a bulk job that meets the lock is recorded failed with the busy refusal, not internal; the chunk before it stays', async () => {
    const ids = Array.from({ length: 2 * JOB_CHUNK }, () => `0x${randomUid().hex}`);
    lockAtChunk.calls = 0;
    lockAtChunk.chunk = 2;
    lockAtChunk.take = () => other.exec('BEGIN IMMEDIATE');
    // released once the job has logged its failure, before it records it: the record is a write too
    onLine = (line) => {
      if (line.msg.startsWith('bulk job failed') && other.inTransaction) other.exec('ROLLBACK');
    };
    const devicesStored = () => (other.prepare('select count(*) as n from devices').get() as { n: number }).n;
    const before = devicesStored();
    const base = '/ota/factories/demo/el2g-proxy/device-jobs';
    const submitted = await f.svc.call('POST', base, { body: { nc12: '935389312472', deviceIds: ids } });
    expect(submitted.status).toBe(202);
    let job: {
      status: string;
      processed: number;
      counts: { added: number };
      error?: { code: string; message: string };
    };
    for (;;) {
      job = (await f.svc.call('GET', `${base}/${submitted.json.id}`)).json;
      if (job.status === 'done' || job.status === 'failed') break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    onLine = () => {};
    expect(other.inTransaction).toBe(false);
    expect(lockAtChunk.calls).toBe(2);
    expect(job).toMatchObject({
      status: 'failed',
      processed: JOB_CHUNK,
      error: { code: 'unavailable', message: expect.stringMatching(BUSY) },
    });
    // the job's own line, no stack: the cause goes to the busy burst's one line
    expect(lines.filter((l) => l.msg === 'bulk job failed')).toEqual([]);
    expect(lines.filter((l) => l.msg === 'bulk job failed: database').map((l) => l.code)).toEqual([
      expect.stringMatching(/^SQLITE_BUSY/),
    ]);
    // the first chunk's ids were added, the second's not
    expect(job.counts).toMatchObject({ added: JOB_CHUNK });
    expect(devicesStored()).toBe(before + JOB_CHUNK);
  });
});

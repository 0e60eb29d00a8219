import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { recordAudit } from '../../src/audit/audit-log.ts';
import { AUDIT_PRUNE_INTERVAL_MS, pruneAudit, startAuditRetention } from '../../src/audit/retention.ts';
import { validateConfig } from '../../src/config/load.ts';
import { startService } from '../../src/service.ts';
import type { Db } from '../../src/storage/database.ts';
import { BACKENDS, freshDatabase } from '../support/databases.ts';
import { withTurns } from '../support/event-loop.ts';
import { testDir } from '../support/temp-dir.ts';

const DAY = 24 * 60 * 60 * 1000;
const silent = pino({ level: 'silent' });

async function backDated(db: Db, object: string, daysAgo: number) {
  const entry = { factoryId: null, actor: 'system', action: 'test.entry', object, correlationId: object };
  await recordAudit(db, entry, new Date(Date.now() - daysAgo * DAY));
}

async function objects(db: Db) {
  const rows = await db.selectFrom('audit_log').select('object').where('action', '=', 'test.entry').execute();
  return rows.map((r) => r.object).sort();
}

describe.each(BACKENDS)('audit retention on %s', (backend) => {
  let database: Awaited<ReturnType<typeof freshDatabase>>;
  beforeAll(async () => {
    database = await freshDatabase(backend);
  });
  afterAll(async () => {
    await database.dispose();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('deletes the entries older than the retention, and only those', async () => {
    await backDated(database.db, 'p-400', 400);
    await backDated(database.db, 'p-31', 31);
    await backDated(database.db, 'p-29', 29);
    await backDated(database.db, 'p-0', 0);
    expect(await pruneAudit(database.db, 30)).toBe(2);
    expect(await objects(database.db)).toEqual(['p-0', 'p-29']);
    expect(await pruneAudit(database.db, 30)).toBe(0);
  });

  it('deletes in chunks until no old entry is left', async () => {
    for (let i = 0; i < 5; i++) await backDated(database.db, `k2-${i}`, 50 + i);
    await backDated(database.db, 'k2-new', 2);
    expect(await pruneAudit(database.db, 30, new Date(), 2)).toBe(5);
    expect((await objects(database.db)).filter((o) => o.startsWith('k2-'))).toEqual(['k2-new']);
  });

  it('prunes at start and again every interval', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    await backDated(database.db, 's-10', 10);
    const stop = await startAuditRetention(database.db, 5, silent);
    expect(await objects(database.db)).not.toContain('s-10');
    await backDated(database.db, 's-6', 6);
    await vi.advanceTimersByTimeAsync(AUDIT_PRUNE_INTERVAL_MS);
    await vi.waitFor(async () => expect(await objects(database.db)).not.toContain('s-6'));
    stop();
    await backDated(database.db, 's-7', 7);
    await vi.advanceTimersByTimeAsync(AUDIT_PRUNE_INTERVAL_MS * 2);
    expect(await objects(database.db)).toContain('s-7');
  });
});

describe('keyferryd prunes the audit log at start (audit.retentionDays)', () => {
  it('deletes back-dated rows when it starts again with a short retention', async () => {
    const dataDir = testDir('keyferry-retention-');
    const config = (retentionDays?: number) =>
      validateConfig({
        dataDir,
        api: { listen: '127.0.0.1:0' },
        deviceLink: { enabled: false },
        gateway: { enabled: false },
        log: { level: 'silent' },
        ...(retentionDays ? { audit: { retentionDays } } : {}),
      });
    const first = await startService({ config: config(), embeddedDefaults: true });
    expect(first.ctx.config.audit.retentionDays).toBe(365);
    await backDated(first.ctx.database.db, 'k-100', 100);
    await backDated(first.ctx.database.db, 'k-1', 1);
    await first.close();
    const second = await startService({ config: config(30), embeddedDefaults: true });
    try {
      expect(await objects(second.ctx.database.db)).toEqual(['k-1']);
      // the factory's own entries of today stay
      expect(
        (await second.ctx.database.db.selectFrom('audit_log').select('id').execute()).length,
      ).toBeGreaterThan(1);
    } finally {
      await second.close();
    }
  });
});

describe('the audit prune deletes in chunks', () => {
  let database: Awaited<ReturnType<typeof freshDatabase>>;
  beforeAll(async () => {
    database = await freshDatabase('sqlite');
  });
  afterAll(async () => {
    await database.dispose();
  });

  it('deletes every old entry, a chunk a statement, with the event loop turning between them (SQLite)', async () => {
    for (let i = 0; i < 25; i++) await backDated(database.db, `c-old-${i}`, 40 + i);
    await backDated(database.db, 'c-new', 1);
    const { result: deleted, turns } = await withTurns(() => pruneAudit(database.db, 30, new Date(), 10));
    expect(deleted).toBe(25);
    expect(await objects(database.db)).toEqual(['c-new']);
    // 25 entries in chunks of 10: three statements, a turn between each two
    expect(turns).toBeGreaterThanOrEqual(2);
  });
});

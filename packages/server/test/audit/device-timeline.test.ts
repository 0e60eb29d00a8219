import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type AuditEntry,
  deviceTimeline,
  deviceTimelineQuery,
  recordAudit,
} from '../../src/audit/audit-log.ts';
import { auditFiller } from '../support/audit-filler.ts';
import { BACKENDS, freshDatabase, queryPlan } from '../support/databases.ts';

const FILLER = 3000;

function entry(factoryId: number, actor: string, action: string, object: string): AuditEntry {
  return { factoryId, actor, action, object, detail: {}, correlationId: action };
}

describe.each(BACKENDS)('the device timeline on %s', (backend) => {
  let database: Awaited<ReturnType<typeof freshDatabase>>;
  beforeAll(async () => {
    database = await freshDatabase(backend);
    const { db } = database;
    const start = Date.parse('2026-12-04T10:00:00.000Z');
    for (const [i, e] of [
      entry(1, 'token:1', 'allowlist.add', 'device:41'),
      entry(1, 'token:1', 'allowlist.add', 'device:42'),
      entry(2, 'token:9', 'allowlist.add-other-factory', 'device:41'),
      entry(1, 'device:41', 'device-link.manifest', 'device:41'),
      entry(1, 'device:42', 'device-link.manifest', 'device:42'),
      entry(1, 'device:41', 'device-link.enroll', 'secure-object:gw'),
      entry(1, 'device:41', 'device-link.refused', 'path:/x'),
      entry(1, 'token:1', 'pki.update', 'factory:f'),
    ].entries()) {
      await recordAudit(db, e, new Date(start + i * 1000));
    }
    // many entries of other devices after device 41's, as on a busy line
    await auditFiller(db, FILLER);
    await sql`ANALYZE`.execute(db);
  });
  afterAll(async () => {
    await database.dispose();
  });

  it("holds the device's own entries of its factory, what it did and what was done to it, newest first", async () => {
    const timeline = await deviceTimeline(database.db, 1, '41');
    expect(timeline.map((r) => [r.actor, r.action, r.object])).toEqual([
      ['device:41', 'device-link.refused', 'path:/x'],
      ['device:41', 'device-link.enroll', 'secure-object:gw'],
      ['device:41', 'device-link.manifest', 'device:41'],
      ['token:1', 'allowlist.add', 'device:41'],
    ]);
    expect((await deviceTimeline(database.db, 1, '41', 2)).map((r) => r.action)).toEqual([
      'device-link.refused',
      'device-link.enroll',
    ]);
    expect((await deviceTimeline(database.db, 2, '41')).map((r) => r.action)).toEqual([
      'allowlist.add-other-factory',
    ]);
    expect(await deviceTimeline(database.db, 1, '43')).toEqual([]);
  });

  it("reads it through the device's index, not the factory's whole log", async () => {
    const plan = await queryPlan(
      database.db,
      deviceTimelineQuery(database.db, 1, '41', 200).compile(),
      backend,
    );
    expect(plan.join('\n')).toContain('audit_log_device');
  });
});

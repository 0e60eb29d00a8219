import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AuditEntry, listAudit, recordAudit } from '../../src/audit/audit-log.ts';
import { auditFiller } from '../support/audit-filler.ts';
import { BACKENDS, freshDatabase } from '../support/databases.ts';
import { withTurns } from '../support/event-loop.ts';

/** Slices of 100 ids in these tests, so a few thousand entries make dozens of them. */
const SLICE = 100;

function entry(factoryId: number, object: string, correlationId: string): AuditEntry {
  return { factoryId, actor: 'token:1', action: 'test.entry', object, correlationId };
}

/** Entries of request `wanted` in two factories, far apart among thousands of other requests'. */
async function seeded(backend: (typeof BACKENDS)[number]) {
  const database = await freshDatabase(backend);
  const { db } = database;
  await recordAudit(db, entry(1, 'a', 'wanted'));
  await recordAudit(db, entry(1, 'b', 'wanted'));
  await auditFiller(db, 1500);
  await recordAudit(db, entry(2, 'other-factory', 'wanted'));
  await recordAudit(db, entry(1, 'c', 'wanted'));
  await auditFiller(db, 1500);
  await recordAudit(db, entry(1, 'd', 'wanted'));
  await auditFiller(db, 250);
  return database;
}

describe.each(BACKENDS)('the audit log by correlation id on %s', (backend) => {
  let database: Awaited<ReturnType<typeof freshDatabase>>;
  beforeAll(async () => {
    database = await seeded(backend);
  });
  afterAll(async () => {
    await database.dispose();
  });

  const objects = (rows: { object: string }[]) => rows.map((r) => r.object);

  it("finds the request's entries of the factory across the whole log, newest first, and pages them", async () => {
    const { db } = database;
    expect(objects(await listAudit(db, 1, { limit: 10, correlationId: 'wanted' }, SLICE))).toEqual([
      'd',
      'c',
      'b',
      'a',
    ]);
    // the same answer in one slice, as one statement would give it
    expect(objects(await listAudit(db, 1, { limit: 10, correlationId: 'wanted' }, 1e9))).toEqual([
      'd',
      'c',
      'b',
      'a',
    ]);
    const first = await listAudit(db, 1, { limit: 2, correlationId: 'wanted' }, SLICE);
    expect(objects(first)).toEqual(['d', 'c']);
    const rest = await listAudit(db, 1, { limit: 2, before: first[1]!.id, correlationId: 'wanted' }, SLICE);
    expect(objects(rest)).toEqual(['b', 'a']);
    expect(await listAudit(db, 1, { limit: 2, before: rest[1]!.id, correlationId: 'wanted' }, SLICE)).toEqual(
      [],
    );
    expect(objects(await listAudit(db, 2, { limit: 10, correlationId: 'wanted' }, SLICE))).toEqual([
      'other-factory',
    ]);
    expect(await listAudit(db, 1, { limit: 10, correlationId: 'nobody' }, SLICE)).toEqual([]);
  });
});

// On SQLite each statement runs on the event loop; on PostgreSQL none does, so there is nothing to see.
describe('the audit log by correlation id on sqlite, while it reads', () => {
  let database: Awaited<ReturnType<typeof freshDatabase>>;
  beforeAll(async () => {
    database = await seeded('sqlite');
  });
  afterAll(async () => {
    await database.dispose();
  });

  it('lets the event loop turn between slices while it reads', async () => {
    const { result: found, turns } = await withTurns(() =>
      listAudit(database.db, 1, { limit: 10, correlationId: 'nobody' }, SLICE),
    );
    expect(found).toEqual([]);
    // ~3,250 entries in slices of 100: a turn between each two of them
    expect(turns).toBeGreaterThanOrEqual(30);
  });
});

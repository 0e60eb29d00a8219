import { sql } from 'kysely';
import { describe, expect, it, onTestFinished } from 'vitest';
import { revocationVersion } from '../../src/revocation/crl-store.ts';
import type { Db } from '../../src/storage/database.ts';
import { CRL_LISTED_UNTIL } from '../../src/storage/migrations/017-crl-revocation-version.ts';
import { BACKENDS, databaseBefore } from '../support/databases.ts';

const at = '2026-12-02T10:00:00.000Z';

/** A factory with one custody key and `cas` intermediate CAs, as rows; returns the CAs' ids. */
async function factoryWithCas(db: Db, cas: number): Promise<{ factoryId: number; caIds: number[] }> {
  const { id: factoryId } = await db
    .insertInto('factories')
    .values({ name: 'f', repo_id: 'r', subdomain: 's', created_at: at })
    .returning('id')
    .executeTakeFirstOrThrow();
  await db
    .insertInto('custody_keys')
    .values({ id: 'k', backend: 'soft', purpose: 'ca', public_key: 'p', material: 'm', created_at: at })
    .execute();
  const caIds: number[] = [];
  for (let i = 0; i < cas; i++) {
    const { id } = await db
      .insertInto('intermediate_cas')
      .values({
        factory_id: factoryId,
        name: `ca${i}`,
        algorithm: 'EC',
        key_ref: 'k',
        certificate: 'pem',
        created_at: at,
        updated_at: at,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    caIds.push(id);
  }
  return { factoryId, caIds };
}

describe.each(BACKENDS)('migration 017 (CRL revocation versions) on %s', (backend) => {
  it("counts each CA's revoked certificates of an existing database, leaving its stored CRLs without a version", async () => {
    const before = await databaseBefore(backend, '017');
    onTestFinished(() => before.dispose());
    const { factoryId, caIds } = await factoryWithCas(before.db, 3);
    const [busy, quiet, none] = caIds as [number, number, number];
    let serial = 0;
    const certificate = (caId: number, revokedAt: string | null) => ({
      factory_id: factoryId,
      device_row_id: null,
      secure_object_id: null,
      ca_id: caId,
      serial_hex: (++serial).toString(16),
      public_key_sha256: 'h',
      subject_cn: 'cn',
      pem: 'pem',
      not_before: at,
      not_after: '2027-12-02T10:00:00.000Z',
      issued_at: at,
      revoked_at: revokedAt,
      revocation_reason: revokedAt ? 'superseded' : null,
    });
    await before.db
      .insertInto('certificates')
      .values([
        certificate(busy, at),
        certificate(busy, at),
        certificate(busy, '2026-12-02T11:00:00.000Z'),
        certificate(busy, null),
        certificate(quiet, at),
        certificate(none, null),
      ])
      .execute();
    // the CRL the earlier release stored for `busy`, current by its count and latest revocation
    await sql`INSERT INTO crls (ca_id, crl_number, this_update, next_update, revoked_count, revoked_latest, der)
      VALUES (${busy}, 4, ${at}, '2026-12-09T10:00:00.000Z', 3, '2026-12-02T11:00:00.000Z', 'AA==')`.execute(
      before.db,
    );

    const { db } = await before.open();
    expect(await revocationVersion(db, busy)).toBe(3);
    expect(await revocationVersion(db, quiet)).toBe(1);
    expect(await revocationVersion(db, none)).toBe(0);
    // no version: stale at its first read, whatever its count said
    const stored = await db.selectFrom('crls').selectAll().executeTakeFirstOrThrow();
    expect({ crl_number: stored.crl_number, revocation_version: stored.revocation_version }).toEqual({
      crl_number: 4,
      revocation_version: null,
    });
    // the triggers count from there on
    await db
      .updateTable('certificates')
      .set({ revoked_at: at, revocation_reason: 'superseded' })
      .where('ca_id', 'in', [busy, none])
      .where('revoked_at', 'is', null)
      .execute();
    expect(await revocationVersion(db, busy)).toBe(4);
    expect(await revocationVersion(db, quiet)).toBe(1);
    expect(await revocationVersion(db, none)).toBe(1);
  });
});

/** The definition of SQLite index `name`, as sqlite_master keeps it. */
async function indexDefinition(db: Db, name: string): Promise<string> {
  const query = sql<{
    d: string;
  }>`SELECT sql AS d FROM sqlite_master WHERE type = 'index' AND name = ${name}`;
  return ((await query.execute(db)).rows[0]?.d ?? '').replace(/\s+/g, ' ');
}

// on PostgreSQL 018 changes nothing (its doc comment says why; plans-at-scale checks the plan)
describe('migration 018 (the CRL listing read from its index alone) on sqlite', () => {
  it("puts each listed entry's serial, revocation time and reason into the index, still of revoked rows only", async () => {
    const before = await databaseBefore('sqlite', '018');
    onTestFinished(() => before.dispose());
    expect(await indexDefinition(before.db, 'certificates_ca_crl_until')).not.toMatch(/serial_hex/);

    const { db } = await before.open();
    const now = await indexDefinition(db, 'certificates_ca_crl_until');
    expect(now).toMatch(
      /\(ca_id, \(CASE WHEN .* END\), serial_hex, revoked_at, revocation_reason\) WHERE revoked_at IS NOT NULL$/,
    );
    // the re-sign's listing (revocation/crl-store.ts) reads no row of the table
    const plan = await sql<{ detail: string }>`EXPLAIN QUERY PLAN
      SELECT id, serial_hex, revoked_at, revocation_reason FROM certificates
      WHERE ca_id = 1 AND revoked_at IS NOT NULL AND ${sql.raw(CRL_LISTED_UNTIL)} >= '' ORDER BY id`.execute(
      db,
    );
    expect(plan.rows.map((r) => r.detail).join('\n')).toMatch(
      /USING COVERING INDEX certificates_ca_crl_until/,
    );
  });
});

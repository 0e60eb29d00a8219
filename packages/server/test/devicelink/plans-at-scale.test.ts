import { CompiledQuery, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS } from '../../../../test/support/processes.ts';
import type { Db } from '../../src/storage/database.ts';
import { recordStatementTexts } from '../../src/storage/statement-count.ts';
import { BACKENDS, type BackendName } from '../support/databases.ts';
import {
  type DeviceLinkFixture,
  keepAliveLink,
  provisionOverDeviceLink,
  startDeviceLinkFixture,
} from './fixture.ts';

const STORED = JSON.stringify({
  results: [
    { name: 'fio-device-gateway-ca-kp', status: 'SUCCESS' },
    { name: 'fio-device-gateway-ca', status: 'SUCCESS' },
  ],
});

/** The tables that grow with the fleet: a whole pass over one of them on a device's request is a fault. */
const FLEET_TABLES = ['devices', 'device_objects', 'certificates', 'audit_log'];
/** Devices added to the factory, each a copy of the provisioned one, with its states and rows. */
const DEVICES = 20_000;
/** Certificates per device and object: the provisioned one's, renewed and revoked again and again. */
const CERTIFICATES_EACH = 4;
/** Audit entries per device added. */
const AUDIT_EACH = 5;
/**
 * What a CRL lists: a CA's revoked certificates not expired, or revoked, more than an hour
 * before its previous CRL (revocation/crl-store.ts). Its read takes one range of an index,
 * however many certificates the CA revoked before and saw expire.
 */
const CRL_LISTING = /"revoked_at" is not null and CASE WHEN/;
const CRL_RANGE: Record<BackendName, RegExp> = {
  // the entries read from the index alone (migration 018), no row of the table
  sqlite: /USING COVERING INDEX certificates_ca_crl_until \(ca_id=\? AND <expr>>\?\)/,
  postgres: /Index Cond: \(\(ca_id = \$\d+\) AND \(CASE WHEN .* END >= \$\d+\)\)/,
};

/**
 * Every statement a device's whole life sends — first provisioning, a new key, a renewal and
 * the report that ends its rotation, a failure, a device refused — recorded, then planned on a
 * database whose factory holds 20,000 devices, 80,000 certificates (60,000 revoked) and
 * 100,000 audit entries. On PostgreSQL the plan is the generic one: keyferryd
 * runs these as named prepared statements, for which PostgreSQL switches to a plan made
 * without the parameters' values after five runs, and a plan that looks fine for one device's
 * values can be a full scan for all of them (the manifest's `id = (SELECT max(id) …)` form was
 * a hash join over the whole certificates table, docs/performance.md). Planned with the
 * tables' statistics (ANALYZE, as autovacuum does). On SQLite keyferry keeps no statistics,
 * so its plan does not depend on the tables' size.
 */
describe.each(BACKENDS)(
  "the device-link's queries on a factory of 20,000 devices, on %s",
  { timeout: PROCESS_TEST_TIMEOUT_MS },
  (backend) => {
    let f: DeviceLinkFixture;
    let texts: string[];
    const db = (): Db => f.svc.service.ctx.database.db;

    beforeAll(async () => {
      f = await startDeviceLinkFixture(backend, {}, { jobs: { pollMs: 3_600_000 } });
      const device = await f.device();
      const recorded = recordStatementTexts();
      await provisionOverDeviceLink(f.call, device);
      const link = keepAliveLink(f, device);
      try {
        const enroll = async (op: string) => {
          const answer = await link.enroll(op);
          expect(answer.status, answer.text).toBe(200);
        };
        const report = async (body: string) => {
          const answer = await link.report(body);
          expect(answer.status, answer.text).toBe(200);
        };
        await enroll('simpleenroll'); // a new key: the old certificate revoked
        await report(STORED);
        await enroll('simplereenroll'); // a renewal: two live certificates
        expect((await link.call({ path: '/device-link/v1/manifest' })).status).toBe(200);
        await report(STORED); // ends the rotation
        await report(
          JSON.stringify({
            results: [{ name: 'fio-device-gateway-ca', status: 'FAILED', detail: 'store failed' }],
          }),
        );
      } finally {
        link.close();
      }
      const refused = await f.call(await f.device({ allowList: false }), {
        path: '/device-link/v1/manifest',
      });
      expect(refused.status).toBe(403);
      // the CRL re-signs the rekey and the rotation scheduled, run after their answers
      await f.svc.service.ctx.crlRefresher.settled();
      texts = recorded().filter((text) => /^\s*(select|insert|update|delete|with)\b/i.test(text));
      await fill(db(), device.uid.decimal);
      if (backend === 'postgres') await sql`ANALYZE`.execute(db());
    });
    afterAll(async () => {
      await f?.svc.stop();
    });

    it('holds the fleet it is planned on', async () => {
      const count = async (table: string) =>
        Number(
          (await sql<{ n: number }>`SELECT count(*) AS n FROM ${sql.table(table)}`.execute(db())).rows[0]?.n,
        );
      expect(await count('devices')).toBeGreaterThan(DEVICES);
      expect(await count('certificates')).toBeGreaterThan(DEVICES * CERTIFICATES_EACH);
      expect(await count('audit_log')).toBeGreaterThan(DEVICES * AUDIT_EACH);
    });

    it('reads and writes a device through indexes, never a whole pass over a fleet table', async () => {
      // what a device's life runs: the factory by name, its device, objects, plan, CAs,
      // certificates, the one-statement writes, the revocations, the audit rows
      expect(texts.length).toBeGreaterThanOrEqual(10);
      const faults: string[] = [];
      for (const text of texts) {
        const plan = await plannedWithoutValues(db(), text, backend);
        if (FLEET_TABLES.some((table) => fullPass(plan, table, backend))) {
          faults.push(`${text}\n  ${plan.join('\n  ')}`);
        }
      }
      expect(faults, faults.join('\n\n')).toEqual([]);
    });

    it("lists a CRL's entries from one range of an index, not from every certificate its CA revoked", async () => {
      // the rekey's and the rotation's re-signs, each after a CRL signed before
      const listings = texts.filter((text) => CRL_LISTING.test(text));
      expect(listings.length).toBeGreaterThanOrEqual(1);
      for (const text of new Set(listings)) {
        const plan = (await plannedWithoutValues(db(), text, backend)).join('\n');
        expect(plan, text).toMatch(CRL_RANGE[backend]);
      }
    });

    it('would see a whole pass: the check finds one in a query that makes one', async () => {
      const query = db()
        .selectFrom('certificates')
        .select('id')
        .where('subject_cn', '=', 'no index')
        .compile().sql;
      expect(fullPass(await plannedWithoutValues(db(), query, backend), 'certificates', backend)).toBe(true);
    });
  },
);

/** Whether a plan passes over every row of `table` (a sequential scan, or SQLite's SCAN of it or of one of its indexes). */
function fullPass(plan: string[], table: string, backend: BackendName): boolean {
  const pass =
    backend === 'postgres' ? new RegExp(`Seq Scan on ${table}\\b`) : new RegExp(`^SCAN ${table}\\b`);
  return plan.some((line) => pass.test(line.trim()));
}

/**
 * The plan of `query` with no parameter's value known. PostgreSQL: its generic plan (PREPARE,
 * `plan_cache_mode = force_generic_plan`, EXPLAIN EXECUTE with NULLs; nothing runs). SQLite:
 * EXPLAIN QUERY PLAN with NULLs, the only plan it makes.
 */
async function plannedWithoutValues(db: Db, text: string, backend: BackendName): Promise<string[]> {
  if (backend === 'sqlite') {
    // Kysely writes every value as a parameter: each ? is one
    const nulls = Array.from(text.matchAll(/\?/g), () => null);
    const { rows } = await db.executeQuery<{ detail: string }>(
      CompiledQuery.raw(`EXPLAIN QUERY PLAN ${text}`, nulls),
    );
    return rows.map((r) => r.detail);
  }
  return db.connection().execute(async (c) => {
    await sql`SET plan_cache_mode = force_generic_plan`.execute(c);
    try {
      await c.executeQuery(CompiledQuery.raw(`PREPARE plan_check AS ${text}`));
      const { rows: count } = await sql<{ n: number }>`SELECT cardinality(parameter_types) AS n
        FROM pg_prepared_statements WHERE name = 'plan_check'`.execute(c);
      const values = Array.from({ length: Number(count[0]?.n) }, () => 'NULL').join(', ');
      const { rows } = await c.executeQuery<{ 'QUERY PLAN': string }>(
        CompiledQuery.raw(`EXPLAIN EXECUTE plan_check${values ? `(${values})` : ''}`),
      );
      return rows.map((r) => r['QUERY PLAN']);
    } finally {
      await sql`DEALLOCATE ALL`.execute(c);
      await sql`RESET plan_cache_mode`.execute(c);
    }
  });
}

/**
 * Adds DEVICES copies of the provisioned device to its factory: each with the same objects'
 * states, CERTIFICATES_EACH certificates per object of the device's (the newest live, the
 * others revoked) and AUDIT_EACH audit entries, in a few statements that both backends run.
 */
async function fill(db: Db, deviceId: string): Promise<void> {
  const source = await db
    .selectFrom('devices')
    .select(['id', 'factory_id'])
    .where('device_id', '=', deviceId)
    .executeTakeFirstOrThrow();
  const { max } = await db
    .selectFrom('devices')
    .select((eb) => eb.fn.max('id').as('max'))
    .executeTakeFirstOrThrow();
  const series = (n: number) =>
    sql`WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ${sql.lit(n)})`;
  await sql`${series(DEVICES)}
    INSERT INTO devices (factory_id, device_id, group_id, nc12, added_at, last_connection, state_rank, state_at)
    SELECT d.factory_id, CAST(900000000000 + g.n AS TEXT), d.group_id, d.nc12, d.added_at, d.last_connection,
      d.state_rank, d.state_at
    FROM devices d, g WHERE d.id = ${source.id}`.execute(db);
  await sql`INSERT INTO device_objects (device_row_id, secure_object_id, state, reason, updated_at)
    SELECT d.id, o.secure_object_id, o.state, o.reason, o.updated_at
    FROM devices d, device_objects o WHERE d.id > ${max} AND o.device_row_id = ${source.id}`.execute(db);
  await sql`${series(CERTIFICATES_EACH)}
    INSERT INTO certificates (factory_id, device_row_id, secure_object_id, ca_id, serial_hex, public_key_sha256,
      subject_cn, pem, not_before, not_after, issued_at, revoked_at, revocation_reason)
    SELECT c.factory_id, d.id, c.secure_object_id, c.ca_id,
      'f' || CAST(d.id AS TEXT) || 'a' || CAST(c.id AS TEXT) || 'b' || CAST(g.n AS TEXT),
      c.public_key_sha256, d.device_id, c.pem, c.not_before, c.not_after, c.issued_at,
      CASE WHEN g.n < ${sql.lit(CERTIFICATES_EACH)} THEN c.issued_at ELSE NULL END,
      CASE WHEN g.n < ${sql.lit(CERTIFICATES_EACH)} THEN 'superseded' ELSE NULL END
    FROM devices d, g,
      (SELECT * FROM certificates WHERE device_row_id = ${source.id} AND revoked_at IS NULL) c
    WHERE d.id > ${max}`.execute(db);
  await sql`${series(AUDIT_EACH)}
    INSERT INTO audit_log (at, factory_id, actor, action, object, detail, correlation_id)
    SELECT d.added_at, d.factory_id, 'device:' || d.device_id, 'device-link.manifest', 'device:' || d.device_id,
      '{}', 'fill-' || CAST(d.id AS TEXT) || '-' || CAST(g.n AS TEXT)
    FROM devices d, g WHERE d.id > ${max}`.execute(db);
}

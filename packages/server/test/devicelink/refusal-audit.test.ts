import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS } from '../../../../test/support/processes.ts';
import { BACKENDS } from '../support/databases.ts';
import { type DeviceLinkFixture, forgedIdentity, freshCsr, startDeviceLinkFixture } from './fixture.ts';

const ENROLL = '/.well-known/est/fio-device-gateway-ca/simpleenroll';
const CSR_HEADERS = { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' };
const REFUSALS = 300;

describe.each(BACKENDS)(
  'repeated refusals are counted audit entries on %s',
  { timeout: PROCESS_TEST_TIMEOUT_MS },
  (backend) => {
    let f: DeviceLinkFixture;
    beforeAll(async () => {
      f = await startDeviceLinkFixture(backend, {
        // the point is the audit of refusals, not the rate limit in front of it
        deviceLink: {
          listen: '127.0.0.1:0',
          rateLimits: { perIdentity: { burst: 100_000, perMinute: 100_000 } },
        },
      });
    });
    afterAll(async () => {
      await f?.svc.stop();
    });

    async function refusalRows(actor: string) {
      return f.svc.service.ctx.database.db
        .selectFrom('audit_log')
        .selectAll()
        .where('action', '=', 'device-link.refused')
        .where('actor', '=', actor)
        .orderBy('id')
        .execute();
    }

    it(`${REFUSALS} refused enrolls of one non-allow-listed identity add a row a minute, counting them all`, async () => {
      const device = await f.device({ allowList: false });
      const body = (await freshCsr()).base64;
      const started = Date.now();
      const ids: string[] = [];
      for (let i = 0; i < REFUSALS; i++) {
        const res = await f.call(device, { method: 'POST', path: ENROLL, headers: CSR_HEADERS, body });
        expect(res.json.code).toBe('device_not_allowlisted');
        ids.push(String(res.headers['x-correlation-id']));
      }
      const minutes = Math.floor(Date.now() / 60_000) - Math.floor(started / 60_000);
      const rows = await refusalRows(`device:${device.uid.decimal}`);
      expect(rows.length).toBeGreaterThanOrEqual(1);
      expect(rows.length).toBeLessThanOrEqual(minutes + 1);
      expect(rows.reduce((sum, r) => sum + r.count, 0)).toBe(REFUSALS);
      // the first refusal's detail and correlation id are kept
      expect(rows[0]!.correlation_id).toBe(ids[0]);
      expect(JSON.parse(rows[0]!.detail)).toMatchObject({ code: 'device_not_allowlisted' });
      expect(await f.count('certificates')).toBe(0);
    });

    it('a fresh self-signed identity per request still adds one row a minute: unverified callers count by address', async () => {
      const before = await f.svc.service.ctx.database.db
        .selectFrom('audit_log')
        .select(['id', 'count'])
        .where('action', '=', 'device-link.refused')
        .execute();
      const started = Date.now();
      for (let i = 0; i < 40; i++) {
        const res = await f.call(await forgedIdentity(undefined), { path: '/device-link/v1/manifest' });
        expect(res.json.code).toBe('untrusted_identity');
      }
      const minutes = Math.floor(Date.now() / 60_000) - Math.floor(started / 60_000);
      const counts = new Map(before.map((r) => [r.id, r.count]));
      const changed = (
        await f.svc.service.ctx.database.db
          .selectFrom('audit_log')
          .selectAll()
          .where('action', '=', 'device-link.refused')
          .execute()
      ).filter((r) => r.count !== counts.get(r.id));
      expect(changed.length).toBeLessThanOrEqual(minutes + 1);
      expect(changed.reduce((sum, r) => sum + r.count - (counts.get(r.id) ?? 0), 0)).toBe(40);
    });

    it('a fresh path per request still adds one row a minute: refusals count by route, the path kept short', async () => {
      const rowsNow = () =>
        f.svc.service.ctx.database.db
          .selectFrom('audit_log')
          .selectAll()
          .where('action', '=', 'device-link.refused')
          .execute();
      const counts = new Map((await rowsNow()).map((r) => [r.id, r.count]));
      const started = Date.now();
      for (let i = 0; i < 40; i++) {
        // no client certificate at all: an unknown path, and an unknown EST label, each new
        const lost = await f.call(undefined, { path: `/x${i}-${'a'.repeat(4000)}` });
        expect(lost.json.code).toBe('not_found');
        const label = await f.call(undefined, { path: `/.well-known/est/nosuch${i}/cacerts` });
        expect(label.status).toBe(404);
      }
      const minutes = Math.floor(Date.now() / 60_000) - Math.floor(started / 60_000);
      const changed = (await rowsNow()).filter((r) => r.count !== counts.get(r.id));
      // two routes (unmatched, the EST cacerts), a row each a minute
      expect(changed.length).toBeLessThanOrEqual(2 * (minutes + 1));
      expect(changed.reduce((sum, r) => sum + r.count - (counts.get(r.id) ?? 0), 0)).toBe(80);
      expect(new Set(changed.map((r) => r.object))).toEqual(
        new Set(['path:unmatched', 'path:/.well-known/est/{label}/cacerts']),
      );
      for (const row of changed) {
        const detail = JSON.parse(row.detail);
        expect(detail.path.length).toBeLessThanOrEqual(513);
        expect(detail.reason.length).toBeLessThanOrEqual(513);
      }
    });

    it('keeps verified callers and reasons apart: each device, and each reason of one, has its own row', async () => {
      const a = await f.device({ allowList: false });
      const b = await f.device({ allowList: false });
      for (const who of [a, a, b]) await f.call(who, { path: '/device-link/v1/manifest' });
      await f.call(a, { path: '/device-link/v1/report', method: 'POST', body: '{}' });
      const rowsA = await refusalRows(`device:${a.uid.decimal}`);
      const rowsB = await refusalRows(`device:${b.uid.decimal}`);
      expect(rowsA.map((r) => [JSON.parse(r.detail).code, r.object, r.count])).toEqual([
        ['device_not_allowlisted', 'path:/device-link/v1/manifest', 2],
        ['device_not_allowlisted', 'path:/device-link/v1/report', 1],
      ]);
      expect(rowsB.map((r) => r.count)).toEqual([1]);
    });
  },
);

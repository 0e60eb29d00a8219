import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS } from '../../../../test/support/processes.ts';
import { BACKENDS } from '../support/databases.ts';
import {
  type DeviceLinkFixture,
  freshCsr,
  keepAliveLink,
  startDeviceLinkFixture,
  type TestDevice,
} from './fixture.ts';

const ENROLL = '/.well-known/est/fio-device-gateway-ca/simpleenroll';
const REPORT = '/device-link/v1/report';
const CSR_HEADERS = { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' };
const JSON_HEADERS = { 'content-type': 'application/json' };

/**
 * The allow-list row is read on a connection's first request and kept for the others
 * (session.ts); each later request's transaction refuses when the row was deleted meanwhile.
 */
describe.each(BACKENDS)(
  'a device removed from the allow-list while its connection is open, on %s',
  { timeout: PROCESS_TEST_TIMEOUT_MS },
  (backend) => {
    let f: DeviceLinkFixture;
    beforeAll(async () => {
      f = await startDeviceLinkFixture(backend);
    });
    afterAll(async () => {
      await f?.svc.stop();
    });

    const connection = (device: TestDevice) => keepAliveLink(f, device);

    async function removeFromAllowList(device: TestDevice) {
      await f.svc.service.ctx.database.db
        .updateTable('devices')
        .set({ deleted_at: new Date().toISOString() })
        .where('device_id', '=', device.uid.decimal)
        .where('deleted_at', 'is', null)
        .execute();
    }

    async function deviceRow(device: TestDevice) {
      return f.svc.service.ctx.database.db
        .selectFrom('devices')
        .select(['id', 'last_connection', 'state_rank', 'deleted_at'])
        .where('device_id', '=', device.uid.decimal)
        .executeTakeFirstOrThrow();
    }

    async function deviceObjects(rowId: number) {
      return f.svc.service.ctx.database.db
        .selectFrom('device_objects')
        .selectAll()
        .where('device_row_id', '=', rowId)
        .orderBy('secure_object_id')
        .execute();
    }

    it('refuses the next requests on that connection and writes nothing for them', async () => {
      const device = await f.device();
      const link = connection(device);
      try {
        expect((await link.call({ path: '/device-link/v1/manifest' })).status).toBe(200);
        await removeFromAllowList(device);
        const row = await deviceRow(device);
        const objects = await deviceObjects(row.id);
        expect(objects.map((o) => o.state)).toEqual(['GENERATION_TRIGGERED', 'GENERATION_TRIGGERED']);
        const certificates = await f.count('certificates');

        const enroll = await link.call({
          method: 'POST',
          path: ENROLL,
          headers: CSR_HEADERS,
          body: (await freshCsr()).base64,
        });
        expect(enroll.reusedSocket).toBe(true);
        expect(enroll.status).toBe(403);
        expect(enroll.json.code).toBe('device_not_allowlisted');
        expect(enroll.json.detail).toContain(
          `device ${device.uid.decimal} was removed from factory demo's allow-list`,
        );

        // a CSR that would be refused is answered with the removal too, and marks nothing failed
        const bad = await link.call({ method: 'POST', path: ENROLL, headers: CSR_HEADERS, body: 'AAAA' });
        expect(bad.reusedSocket).toBe(true);
        expect(bad.json.code).toBe('device_not_allowlisted');

        const report = await link.call({
          method: 'POST',
          path: REPORT,
          headers: JSON_HEADERS,
          body: JSON.stringify({ results: [{ name: 'fio-device-gateway-ca-kp', status: 'FAILED' }] }),
        });
        expect(report.reusedSocket).toBe(true);
        expect(report.json.code).toBe('device_not_allowlisted');

        // nothing of the refused requests is in the database
        expect(await f.count('certificates')).toBe(certificates);
        expect(await deviceObjects(row.id)).toEqual(objects);
        expect(await deviceRow(device)).toEqual(row);
      } finally {
        link.close();
      }

      // a new connection is refused at authentication, with what to do
      const fresh = await f.call(device, { path: '/device-link/v1/manifest' });
      expect(fresh.json.code).toBe('device_not_allowlisted');
      expect(fresh.json.detail).toContain('keyferry el2g devices add');
    });

    it('a device still on the allow-list provisions on one connection, each request recording it', async () => {
      const device = await f.device();
      const link = connection(device);
      try {
        expect((await link.call({ path: '/device-link/v1/manifest' })).status).toBe(200);
        const afterManifest = await deviceRow(device);
        expect(afterManifest.last_connection).not.toBeNull();
        const enroll = await link.call({
          method: 'POST',
          path: ENROLL,
          headers: CSR_HEADERS,
          body: (await freshCsr()).base64,
        });
        expect(enroll.status).toBe(200);
        expect(enroll.reusedSocket).toBe(true);
        // the same object twice in one report: the last result wins
        const report = await link.call({
          method: 'POST',
          path: REPORT,
          headers: JSON_HEADERS,
          body: JSON.stringify({
            results: [
              { name: 'fio-device-gateway-ca-kp', status: 'SUCCESS' },
              { name: 'fio-device-gateway-ca', status: 'FAILED', detail: 'first try' },
              { name: 'fio-device-gateway-ca', status: 'SUCCESS' },
            ],
          }),
        });
        expect(report.status).toBe(200);
        expect(report.reusedSocket).toBe(true);
        expect(await f.states(device)).toEqual({
          'fio-device-gateway-ca-kp': { state: 'PROVISIONING_COMPLETED', reason: null },
          'fio-device-gateway-ca': { state: 'PROVISIONING_COMPLETED', reason: null },
        });
        const done = await deviceRow(device);
        expect(done.last_connection! >= afterManifest.last_connection!).toBe(true);
        expect(done.state_rank).toBe(5);
      } finally {
        link.close();
      }
    });
  },
);

import { randomUid } from '@keyferry/sim';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setupDeviceGateway } from '../../../../test/support/device-link.ts';
import { recomputeDeviceStates } from '../../src/allowlist/device-state.ts';
import {
  devicesByState,
  devicesByStateQuery,
  latestFailures,
  provisioningRate,
  provisioningRateQuery,
  searchDevices,
} from '../../src/allowlist/fleet-status.ts';
import { setObjectState } from '../../src/devicelink/device-records.ts';
import { BACKENDS, freshDatabase, queryPlan } from '../support/databases.ts';
import { startTestService, type TestService } from '../support/service.ts';

const SE050 = '935389312472';
const DEVICES = 120;

describe.each(BACKENDS)('the console fleet queries on %s', (backend) => {
  let svc: TestService;
  let factoryId: number;
  let rows: Array<{ id: number; device_id: string }>;
  let objects: number[];
  const now = new Date();

  beforeAll(async () => {
    svc = await startTestService(backend);
    await setupDeviceGateway(svc.url, svc.token);
    const ids = Array.from({ length: DEVICES }, () => randomUid().decimal);
    const added = await svc.call('POST', '/ota/factories/demo/el2g/devices/', {
      body: { 'product-id': SE050, devices: ids },
    });
    expect(added.status).toBe(200);
    const db = svc.service.ctx.database.db;
    factoryId = (
      await db.selectFrom('factories').select('id').where('name', '=', 'demo').executeTakeFirstOrThrow()
    ).id;
    rows = await db.selectFrom('devices').select(['id', 'device_id']).orderBy('id').execute();
    objects = (await db.selectFrom('secure_objects').select('id').orderBy('id').execute()).map((o) => o.id);
    // 0-9 provisioned, 10: key pair done but certificate failed, 11-14 triggered
    for (const [i, d] of rows.slice(0, 15).entries()) {
      for (const [k, o] of objects.entries()) {
        const state =
          i < 10
            ? 'PROVISIONING_COMPLETED'
            : i === 10
              ? k === 0
                ? 'PROVISIONING_COMPLETED'
                : 'PROVISIONING_FAILED'
              : 'GENERATION_TRIGGERED';
        await setObjectState(db, d.id, o, state, state === 'PROVISIONING_FAILED' ? 'SE full' : null, now);
      }
    }
  });
  afterAll(async () => {
    await svc?.stop();
  });

  it('counts devices by their least advanced object, a failure first', async () => {
    const counts = await devicesByState(svc.service.ctx.database.db, factoryId);
    expect(counts).toEqual({
      GENERATION_FAILED: 0,
      PROVISIONING_FAILED: 1,
      GENERATION_ON_CONNECTION: DEVICES - 15,
      GENERATION_TRIGGERED: 4,
      GENERATION_COMPLETED: 0,
      PROVISIONING_COMPLETED: 10,
    });
  });

  it('keeps the same states when recomputed from the rows (what migration 004 does for old rows)', async () => {
    const db = svc.service.ctx.database.db;
    const before = await db.selectFrom('devices').select(['id', 'state_rank']).orderBy('id').execute();
    await db.updateTable('devices').set({ state_rank: 2 }).execute();
    await recomputeDeviceStates(db, factoryId);
    expect(await db.selectFrom('devices').select(['id', 'state_rank']).orderBy('id').execute()).toEqual(
      before,
    );
  });

  it('charts only fully provisioned devices and lists failures with their reason', async () => {
    const db = svc.service.ctx.database.db;
    const rate = await provisioningRate(db, factoryId, now);
    expect(rate.perMinute.reduce((a, b) => a + b, 0)).toBe(10);
    expect(rate.perMinute.at(-1)).toBe(10);
    expect(await latestFailures(db, factoryId)).toEqual([
      {
        deviceId: rows[10]!.device_id,
        object: 'fio-device-gateway-ca',
        state: 'PROVISIONING_FAILED',
        reason: 'SE full',
        at: now.toISOString(),
      },
    ]);
  });

  it('pages through all devices by cursor without repeats, and filters', async () => {
    const db = svc.service.ctx.database.db;
    const seen: string[] = [];
    let after: number | undefined;
    let pages = 0;
    for (;;) {
      const page = await searchDevices(db, factoryId, {}, after === undefined ? {} : { after });
      seen.push(...page.devices.map((d) => d.deviceId));
      pages++;
      if (page.next === null) break;
      after = page.next;
    }
    expect(pages).toBe(3);
    expect(seen).toEqual(rows.map((r) => r.device_id));

    const triggered = await searchDevices(db, factoryId, { state: 'GENERATION_TRIGGERED' });
    expect(triggered.devices.map((d) => d.deviceId)).toEqual(rows.slice(11, 15).map((r) => r.device_id));
    expect(
      (
        await searchDevices(db, factoryId, {
          group: `fio-${SE050}`,
          nc12: SE050,
          state: 'PROVISIONING_FAILED',
        })
      ).devices,
    ).toHaveLength(1);
    expect((await searchDevices(db, factoryId, { group: 'fio-000000000000' })).devices).toEqual([]);

    const target = rows[42]!.device_id;
    const hex = `0x${BigInt(target).toString(16).padStart(36, '0')}`;
    for (const id of [target, hex, ` ${hex.toUpperCase().replace('0X', '0x')} `]) {
      const found = await searchDevices(db, factoryId, { id });
      expect(
        found.devices.map((d) => d.deviceId),
        id,
      ).toEqual([target]);
    }
    await expect(searchDevices(db, factoryId, { id: '0x1234' })).rejects.toMatchObject({
      code: 'invalid_device_id',
      message: expect.stringContaining('search with 0x followed by 36 hex digits, or 42 decimal digits'),
    });
  });
});

// SQLite answers the live figures on the event loop: they must come from the index alone.
describe('the console live figures on sqlite', () => {
  let database: Awaited<ReturnType<typeof freshDatabase>>;
  beforeAll(async () => {
    database = await freshDatabase('sqlite');
  });
  afterAll(async () => {
    await database.dispose();
  });

  it('count the active devices from devices_factory_state alone, never reading a device row', async () => {
    const queries = [
      devicesByStateQuery(database.db, 1).compile(),
      provisioningRateQuery(database.db, 1, new Date(), 30).compile(),
    ];
    for (const query of queries) {
      const plan = await queryPlan(database.db, query, 'sqlite');
      const searches = plan.filter((d) => d.includes('devices'));
      expect(searches.length).toBeGreaterThan(0);
      for (const d of searches) expect(d).toMatch(/USING COVERING INDEX devices_factory_state /);
    }
  });
});

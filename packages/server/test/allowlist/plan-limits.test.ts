import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { subscriptionYear } from '../../src/allowlist/plan.ts';
import type { Db } from '../../src/storage/database.ts';
import { BACKENDS } from '../support/databases.ts';
import { startTestService, type TestService } from '../support/service.ts';
import { deviceRowCount, factoryId, sequentialIds } from './fixtures.ts';

const BASE = '/ota/factories/demo';
const DAY = 86_400_000;

describe('subscription years', () => {
  it('counts whole years from the subscription start', () => {
    const start = '2025-03-10T12:00:00.000Z';
    expect(subscriptionYear(start, new Date('2025-03-10T12:00:00.000Z')).start.toISOString()).toBe(start);
    expect(subscriptionYear(start, new Date('2026-03-10T11:59:59.000Z')).start.toISOString()).toBe(start);
    const second = subscriptionYear(start, new Date('2026-03-10T12:00:00.000Z'));
    expect(second.start.toISOString()).toBe('2026-03-10T12:00:00.000Z');
    expect(second.end.toISOString()).toBe('2027-03-10T12:00:00.000Z');
  });
});

describe.each(BACKENDS)('plan limits on %s', (backend) => {
  let svc: TestService;
  let db: Db;
  let demo: number;
  const add = (devices: string[]) =>
    svc.call('POST', `${BASE}/el2g/devices/`, { body: { 'product-id': '935389312472', devices } });
  const rowCount = () => deviceRowCount(db);

  beforeAll(async () => {
    svc = await startTestService(backend, { el2g: { plan: { kind: 'commercial', maxDevicesPerYear: 5 } } });
    db = svc.service.ctx.database.db;
    demo = await factoryId(db);
  });
  afterAll(async () => svc?.stop());

  it('adds up to the yearly quota and refuses the rest per device, naming limit, usage and maximum', async () => {
    const ids = sequentialIds(7, 1);
    const res = await add(ids);
    expect(res.status).toBe(200);
    expect(res.json.counts).toMatchObject({ added: 5, refused: 2 });
    expect(res.json.results[5]).toMatchObject({
      status: 'refused',
      code: 'device_quota_exceeded',
      limit: 'devices-per-year',
      usage: 5,
      max: 5,
    });
    expect(res.json.results[6].reason).toMatch(/limit devices-per-year, 5 of 5 devices used/);
    expect(await rowCount()).toBe(5);
  });

  it('still answers already-present for listed devices when the quota is used up', async () => {
    const res = await add(sequentialIds(1, 1));
    expect(res.json.results[0].status).toBe('already-present');
  });

  it('does not give the slot back when a device is deleted (the count is additions this year)', async () => {
    const [first] = sequentialIds(1, 1);
    const del = await svc.call('DELETE', `${BASE}/el2g/devices/`, {
      body: { 'product-id': '935389312472', devices: [first] },
    });
    expect(del.json.results[0].status).toBe('deleted');
    const res = await add(sequentialIds(1, 2));
    expect(res.status).toBe(403);
    expect(res.json.code).toBe('device_quota_exceeded');
    expect(res.json.info.results[0]).toMatchObject({ status: 'refused', usage: 5, max: 5 });
    expect(await rowCount()).toBe(5);
    const plan = await svc.call('GET', `${BASE}/el2g/plan/`);
    expect(plan.json).toMatchObject({
      kind: 'commercial',
      devices: { used: 5, max: 5 },
      evaluationEndsAt: null,
    });
  });

  it('a batch refused by the quota for every device left a new product behind: the refusal undoes it', async () => {
    const products = () =>
      db.selectFrom('factory_products').select('nc12').where('factory_id', '=', demo).execute();
    const groups = () =>
      db.selectFrom('device_groups').select('name').where('factory_id', '=', demo).execute();
    const before = { products: await products(), groups: await groups(), devices: await rowCount() };
    const res = await svc.call('POST', `${BASE}/el2g/devices/`, {
      body: { 'product-id': '935414457472', devices: sequentialIds(2, 40) },
    });
    expect(res.status).toBe(403);
    expect(res.json.code).toBe('device_quota_exceeded');
    expect(res.json.info.results.map((r: { status: string }) => r.status)).toEqual(['refused', 'refused']);
    expect({ products: await products(), groups: await groups(), devices: await rowCount() }).toEqual(before);
  });

  it('counts only the current subscription year', async () => {
    const aYearAgo = new Date(Date.now() - 366 * DAY).toISOString();
    await db
      .updateTable('factory_el2g')
      .set({ subscription_start: aYearAgo })
      .where('factory_id', '=', demo)
      .execute();
    await db.updateTable('devices').set({ added_at: aYearAgo }).where('factory_id', '=', demo).execute();
    const res = await add(sequentialIds(2, 3));
    expect(res.json.counts.added).toBe(2);
    expect((await svc.call('GET', `${BASE}/el2g/plan/`)).json.devices.used).toBe(2);
  });

  it('refuses the whole request once an evaluation is over, saying which limit, and stores nothing', async () => {
    await db
      .updateTable('factory_el2g')
      .set({ plan: 'evaluation', enabled_at: new Date(Date.now() - 31 * DAY).toISOString() })
      .where('factory_id', '=', demo)
      .execute();
    const before = await rowCount();
    const res = await add(sequentialIds(1, 4));
    expect(res.status).toBe(403);
    expect(res.json.code).toBe('evaluation_expired');
    expect(res.json.detail).toMatch(/limit evaluation-days, 31 days used of 30/);
    expect(res.json.info).toMatchObject({ limit: 'evaluation-days', usage: 31, max: 30 });
    expect(await rowCount()).toBe(before);
    const plan = await svc.call('GET', `${BASE}/el2g/plan/`);
    expect(plan.json).toMatchObject({ kind: 'evaluation', evaluationExpired: true });
  });
});

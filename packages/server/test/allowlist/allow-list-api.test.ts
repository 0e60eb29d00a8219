import { parseDeviceId } from '@keyferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REVOCATION_REASON } from '../../src/allowlist/allow-list.ts';
import { MAX_DEVICE_PAGE } from '../../src/allowlist/device-listing.ts';
import type { Db } from '../../src/storage/database.ts';
import { BACKENDS } from '../support/databases.ts';
import { startTestService, type TestService } from '../support/service.ts';
import {
  deviceRowCount,
  factoryId,
  issueCertificate,
  seedGatewayObjects,
  sequentialIds,
  testCertificatePem,
} from './fixtures.ts';

const GUIDE_HEX = '0x04005001eee3ba1ee96e60047e57da0f6880';
const GUIDE_DEC = '348555492004256518532939906410866457667712';
const SE050 = '935389312472';
const SE051 = '935414457472';
const BASE = '/ota/factories/demo';

describe.each(BACKENDS)('allow-list API on %s', (backend) => {
  let svc: TestService;
  let db: Db;
  let demo: number;
  let objects: Awaited<ReturnType<typeof seedGatewayObjects>>;
  const add = (devices: unknown[], extra: Record<string, unknown> = {}) =>
    svc.call('POST', `${BASE}/el2g/devices/`, { body: { 'product-id': SE050, devices, ...extra } });
  const del = (devices: unknown[], extra: Record<string, unknown> = {}) =>
    svc.call('DELETE', `${BASE}/el2g/devices/`, { body: { 'product-id': SE050, devices, ...extra } });
  const rowCount = () => deviceRowCount(db);

  beforeAll(async () => {
    svc = await startTestService(backend);
    db = svc.service.ctx.database.db;
    demo = await factoryId(db);
    objects = await seedGatewayObjects(db, demo);
  });
  afterAll(async () => svc?.stop());

  it("adds the guide's device and lists it under fio-<12nc> with its decimal id (as a string)", async () => {
    const res = await add([GUIDE_HEX]);
    expect(res.status).toBe(200);
    expect(res.json.counts).toEqual({
      added: 1,
      'already-present': 0,
      invalid: 0,
      'in-other-group': 0,
      refused: 0,
    });
    expect(res.json.results).toEqual([{ id: GUIDE_HEX, 'device-id': GUIDE_DEC, status: 'added' }]);
    const list = await svc.call('GET', `${BASE}/el2g/devices/`);
    expect(list.json).toContainEqual({
      'device-group': 'fio-935389312472',
      id: GUIDE_DEC,
      'last-connection': null,
    });
    expect(list.headers.get('x-device-groups')).toBe('fio-935389312472');
  });

  it('answers already-present for a repeat in either form, without a second row', async () => {
    const before = await rowCount();
    const res = await add([GUIDE_DEC, GUIDE_HEX]);
    expect(res.json.results.map((r: { status: string }) => r.status)).toEqual([
      'already-present',
      'already-present',
    ]);
    expect(await rowCount()).toBe(before);
  });

  it('answers per device: invalid ids beside good ones, with the reason naming both forms', async () => {
    const [good] = sequentialIds(1, 1);
    const res = await add(['0x123', good, `${GUIDE_HEX} `]);
    expect(res.status).toBe(200);
    expect(res.json.results[0]).toMatchObject({ id: '0x123', status: 'invalid', code: 'invalid_device_id' });
    expect(res.json.results[0].reason).toContain('0x followed by 36 hex digits, or 42 decimal digits');
    expect(res.json.results[1]).toMatchObject({ id: good, status: 'added' });
    expect(res.json.results[2]).toMatchObject({ status: 'invalid' });
  });

  it('refuses a device already in the other group of the product, naming it, and changes nothing', async () => {
    const before = await rowCount();
    const res = await add([GUIDE_HEX], { production: true });
    expect(res.status).toBe(409);
    expect(res.json.info.results[0]).toMatchObject({ status: 'in-other-group', group: 'fio-935389312472' });
    expect(await rowCount()).toBe(before);
    const rows = await db
      .selectFrom('devices')
      .select('group_id')
      .where('device_id', '=', GUIDE_DEC)
      .execute();
    expect(rows).toHaveLength(1);
  });

  it('a batch in which no device was added or deleted answered 200 (fioctl took it for success): it is a 4xx naming each device', async () => {
    const before = await rowCount();
    const big = '0xff005001eee3ba1ee96e60047e57da0f6880';
    // every device in the other group: the other group's code and status
    const other = await add([GUIDE_HEX, GUIDE_DEC], { production: true });
    expect(other.status).toBe(409);
    expect(other.json).toMatchObject({
      code: 'device_in_other_group',
      detail: `no device added: ${GUIDE_HEX} is in group fio-935389312472: remove it there first; ${GUIDE_DEC} is in group fio-935389312472: remove it there first`,
    });
    expect(other.json.info.results).toEqual([
      { id: GUIDE_HEX, 'device-id': GUIDE_DEC, status: 'in-other-group', group: 'fio-935389312472' },
      { id: GUIDE_DEC, 'device-id': GUIDE_DEC, status: 'in-other-group', group: 'fio-935389312472' },
    ]);
    expect(other.json.info.counts['in-other-group']).toBe(2);
    // only invalid ids: 400, the too-large one told what is wrong with its value
    const invalid = await add(['0x12', big]);
    expect(invalid.status).toBe(400);
    expect(invalid.json.code).toBe('invalid_device_id');
    expect(invalid.json.info.results[1].reason).toBe(
      `invalid device id "${big}": its value does not fit the 42-digit decimal form EdgeLock 2GO ids use (the largest is 0x0b7abc627050305adf14a3d9e3ffffffffff); SE05x UIDs start 0x04: read the UID again (keyferry-agent uid)`,
    );
    // mixed reasons: conflict, every device in info
    const mixed = await add(['0x12', GUIDE_HEX], { production: true });
    expect(mixed.status).toBe(409);
    expect(mixed.json.code).toBe('conflict');
    expect(mixed.json.info.results.map((r: { status: string }) => r.status)).toEqual([
      'invalid',
      'in-other-group',
    ]);
    // delete: nothing deleted (other group, invalid) is refused; not-present is already so (200)
    const wrongGroup = await del([GUIDE_HEX], { production: true });
    expect(wrongGroup.status).toBe(409);
    expect(wrongGroup.json.detail).toMatch(/^no device deleted: /);
    expect((await del([big])).status).toBe(400);
    expect((await del([sequentialIds(1, 77)[0]])).status).toBe(200);
    // partly successful stays 200 with per-device results
    const partial = await add([sequentialIds(1, 78)[0], big]);
    expect(partial.status).toBe(200);
    expect(partial.json.results.map((r: { status: string }) => r.status)).toEqual(['added', 'invalid']);
    expect(await rowCount()).toBe(before + 1);
  });

  it('refuses an unknown product, non-string ids and unknown fields before storing anything', async () => {
    const before = await rowCount();
    const unknown = await svc.call('POST', `${BASE}/el2g/devices/`, {
      body: { 'product-id': '123456789012', devices: [sequentialIds(1, 2)[0]] },
    });
    expect(unknown.status).toBe(400);
    expect(unknown.json.code).toBe('unknown_product');
    const numeric = await svc.call('POST', `${BASE}/el2g/devices/`, {
      raw: `{"product-id": "${SE050}", "devices": [${GUIDE_DEC}]}`,
      headers: { 'content-type': 'application/json' },
    });
    expect(numeric.status).toBe(400);
    expect(numeric.json.detail).toContain('JSON strings');
    const extra = await add([GUIDE_HEX], { force: true });
    expect(extra.json.code).toBe('unknown_field');
    const tooMany = await add(sequentialIds(10_001, 3));
    expect(tooMany.status).toBe(400);
    expect(tooMany.json.detail).toContain('at most 10000');
    expect(await rowCount()).toBe(before);
  });

  it('adds a catalogue product the factory did not have yet, with its two groups', async () => {
    const res = await svc.call('POST', `${BASE}/el2g/devices/`, {
      body: { 'product-id': SE051, devices: [sequentialIds(1, 4)[0]], production: true },
    });
    expect(res.json).toMatchObject({ group: `fio-${SE051}-production`, counts: { added: 1 } });
    const groups = await db.selectFrom('device_groups').select('name').where('nc12', '=', SE051).execute();
    expect(groups.map((g) => g.name).sort()).toEqual([`fio-${SE051}`, `fio-${SE051}-production`]);
  });

  it('keeps exactly one row when the same id is added concurrently', async () => {
    const [id] = sequentialIds(1, 5);
    const answers = await Promise.all(Array.from({ length: 12 }, () => add([id])));
    const statuses = answers.map((a) => a.json.results[0].status);
    expect(statuses.filter((s) => s === 'added')).toHaveLength(1);
    expect(statuses.filter((s) => s === 'already-present')).toHaveLength(11);
    const rows = await db
      .selectFrom('devices')
      .select('id')
      .where('device_id', '=', (await add([id])).json.results[0]['device-id'])
      .execute();
    expect(rows).toHaveLength(1);
  });

  it('shows product and assigned objects, GENERATION_ON_CONNECTION until the device connects', async () => {
    const product = await svc.call('GET', `${BASE}/el2g-proxy/devices/${GUIDE_HEX}/product`);
    expect(product.json).toEqual({ commercialName: 'SE050C2HQ1/Z01V3', nc12: SE050 });
    const prov = await svc.call(
      'GET',
      `${BASE}/el2g-proxy/rtp/devices/${GUIDE_DEC}/secure-object-provisionings`,
    );
    expect(prov.json.content).toEqual([
      {
        secureObjectName: 'fio-device-gateway-ca-kp',
        secureObjectType: 'KEYPAIR',
        provisioningState: 'GENERATION_ON_CONNECTION',
        certificate: null,
        reason: null,
      },
      {
        secureObjectName: 'fio-device-gateway-ca',
        secureObjectType: 'CERTIFICATE',
        provisioningState: 'GENERATION_ON_CONNECTION',
        certificate: null,
        reason: null,
      },
    ]);
    const absent = await svc.call('GET', `${BASE}/el2g-proxy/devices/${sequentialIds(1, 6)[0]}/product`);
    expect(absent.status).toBe(404);
    const bad = await svc.call('GET', `${BASE}/el2g-proxy/devices/0x12/product`);
    expect(bad.json.code).toBe('invalid_device_id');
  });

  it('deletes: keeps the record, revokes its certificates, audits, and the device can be re-added', async () => {
    const [id] = sequentialIds(1, 7);
    const added = await add([id]);
    const decimal = added.json.results[0]['device-id'];
    const pem = await testCertificatePem();
    const certId = await issueCertificate(db, demo, decimal, objects, pem);
    const shown = await svc.call('GET', `${BASE}/el2g-proxy/rtp/devices/${id}/secure-object-provisionings`);
    expect(shown.json.content[1]).toMatchObject({
      provisioningState: 'GENERATION_COMPLETED',
      certificate: pem,
    });

    const wrongGroup = await del([id], { production: true });
    expect(wrongGroup.json.info.results[0]).toMatchObject({
      status: 'in-other-group',
      group: 'fio-935389312472',
    });
    const cert0 = await db
      .selectFrom('certificates')
      .selectAll()
      .where('id', '=', certId)
      .executeTakeFirstOrThrow();
    expect(cert0.revoked_at).toBeNull();

    const res = await del([id, id, sequentialIds(1, 8)[0], 'nope']);
    expect(res.json.results.map((r: { status: string }) => r.status)).toEqual([
      'deleted',
      'not-present',
      'not-present',
      'invalid',
    ]);
    const row = await db
      .selectFrom('devices')
      .selectAll()
      .where('device_id', '=', decimal)
      .executeTakeFirstOrThrow();
    expect(row.deleted_at).not.toBeNull();
    const cert = await db
      .selectFrom('certificates')
      .selectAll()
      .where('id', '=', certId)
      .executeTakeFirstOrThrow();
    expect(cert.revoked_at).not.toBeNull();
    expect(cert.revocation_reason).toBe(REVOCATION_REASON);
    const audit = await svc.call('GET', `${BASE}/audit/?limit=500`);
    const actions = audit.json.entries
      .filter((e: { object: string }) => e.object === `device:${decimal}`)
      .map((e: { action: string }) => e.action);
    expect(actions).toEqual(['device.delete', 'device.add']);
    expect((await svc.call('GET', `${BASE}/el2g-proxy/devices/${id}/product`)).status).toBe(404);
    const list = await svc.call('GET', `${BASE}/el2g/devices/?limit=10000`);
    expect(list.json.map((d: { id: string }) => d.id)).not.toContain(decimal);

    expect((await add([id])).json.results[0].status).toBe('added');
    const rows = await db
      .selectFrom('devices')
      .select('deleted_at')
      .where('device_id', '=', decimal)
      .execute();
    expect(rows).toHaveLength(2);
  });

  it('pages by keyset cursor without repeats or gaps while devices are added between pages', async () => {
    await add(sequentialIds(25, 9));
    const seen: string[] = [];
    let path = `${BASE}/el2g/devices/?limit=10`;
    let pages = 0;
    for (;;) {
      const page = await svc.call('GET', path);
      expect(page.status).toBe(200);
      seen.push(...page.json.map((d: { id: string }) => d.id));
      if (pages++ === 0) await add(sequentialIds(5, 10)); // lands after every cursor
      const next = page.headers.get('x-next-cursor');
      if (!next) break;
      expect(page.headers.get('link')).toContain(`after=${next}`);
      path = `${BASE}/el2g/devices/?limit=10&after=${next}`;
    }
    expect(new Set(seen).size).toBe(seen.length);
    const all = await svc.call('GET', `${BASE}/el2g/devices/?limit=10000`);
    expect(seen).toEqual(all.json.map((d: { id: string }) => d.id));
    const page2 = await svc.call('GET', `${BASE}/el2g/devices/?limit=10&page=2`);
    expect(page2.json.map((d: { id: string }) => d.id)).toEqual(seen.slice(10, 20));
    const both = await svc.call('GET', `${BASE}/el2g/devices/?after=1&page=2`);
    expect(both.status).toBe(400);
    const big = await svc.call('GET', `${BASE}/el2g/devices/?limit=10001`);
    expect(big.json.code).toBe('invalid_request');
  });

  it('registers a large batch as an async job with status, counts and per-device failures', async () => {
    const ids = [...sequentialIds(2_500, 11), '0x99', GUIDE_HEX];
    const before = await rowCount();
    const res = await svc.call('POST', `${BASE}/el2g-proxy/device-jobs`, {
      body: { nc12: SE050, deviceIds: ids },
    });
    expect(res.status).toBe(202);
    expect(res.json).toMatchObject({ total: 2_502, nc12: SE050, production: false });
    expect(res.headers.get('location')).toContain(res.json.id);
    let job = res.json;
    while (job.status === 'queued' || job.status === 'running') {
      await new Promise((r) => setTimeout(r, 50));
      job = (await svc.call('GET', `${BASE}/el2g-proxy/device-jobs/${res.json.id}`)).json;
    }
    expect(job).toMatchObject({
      status: 'done',
      processed: 2_502,
      counts: { added: 2_500, alreadyPresent: 1, invalid: 1, inOtherGroup: 0, refused: 0 },
      failures: [{ deviceId: '0x99', status: 'invalid', code: 'invalid_device_id' }],
    });
    expect(await rowCount()).toBe(before + 2_500);
    const missing = await svc.call(
      'GET',
      `${BASE}/el2g-proxy/device-jobs/00000000-0000-4000-8000-000000000000`,
    );
    expect(missing.status).toBe(404);
    const unknown = await svc.call('POST', `${BASE}/el2g-proxy/device-jobs`, {
      body: { nc12: '111111111111', deviceIds: ids.slice(0, 1) },
    });
    expect(unknown.json.code).toBe('unknown_product');
    expect(await rowCount()).toBe(before + 2_500);
  });

  it('GET el2g/devices/ without paging answered only the first page (fioctl does not page): it streams every device', async () => {
    await add(sequentialIds(MAX_DEVICE_PAGE, 11));
    await add(sequentialIds(500, 12));
    const active = Number(
      (
        await db
          .selectFrom('devices')
          .select((eb) => eb.fn.countAll().as('n'))
          .where('deleted_at', 'is', null)
          .executeTakeFirstOrThrow()
      ).n,
    );
    expect(active).toBeGreaterThan(MAX_DEVICE_PAGE);
    const res = await svc.call('GET', `${BASE}/el2g/devices/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    // written as it is read, not measured first as one buffer
    expect(res.headers.get('transfer-encoding')).toBe('chunked');
    expect(res.headers.get('content-length')).toBeNull();
    expect(res.headers.get('x-next-cursor')).toBeNull();
    expect(res.json).toHaveLength(active);
    const ids = res.json.map((d: { id: string }) => d.id);
    expect(new Set(ids).size).toBe(active);
    expect(ids).toContain(parseDeviceId(sequentialIds(500, 12)[499]!).decimal);
    // with a paging parameter it is paged as before
    const paged = await svc.call('GET', `${BASE}/el2g/devices/?limit=1000`);
    expect(paged.json).toHaveLength(1000);
    expect(paged.json).toEqual(res.json.slice(0, 1000));
    expect(paged.headers.get('x-next-cursor')).not.toBeNull();
  }, 120_000);
});

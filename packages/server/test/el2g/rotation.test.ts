import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type DeviceLinkFixture,
  provisionOverDeviceLink,
  startDeviceLinkFixture,
  type TestDevice,
} from '../devicelink/fixture.ts';

/**
 * Issue 15 §4: `el2g devices rotate` marks live certificates, the manifest tells the device
 * (`rotate: true`), the report of a newer certificate clears it and supersedes the old one;
 * every refusal is problem+json and marks nothing. `el2g/certificates/expiring` lists live
 * certificates by group and expiry.
 */
let f: DeviceLinkFixture;
const devices: TestDevice[] = [];
let bare: TestDevice;
const OBJECT = 'fio-device-gateway-ca';
const GROUP = 'fio-935389312472';
const rotate = (body: unknown) => f.svc.call('POST', '/ota/factories/demo/el2g/devices/rotate', { body });

async function marked(): Promise<string[]> {
  const rows = await f.svc.service.ctx.database.db
    .selectFrom('certificates')
    .select('serial_hex')
    .where('rotation_requested_at', 'is not', null)
    .orderBy('id')
    .execute();
  return rows.map((r) => r.serial_hex);
}

async function manifestEntry(device: TestDevice) {
  const answer = await f.call(device, { path: '/device-link/v1/manifest' });
  expect(answer.status).toBe(200);
  return (JSON.parse(answer.text) as { objects: Array<Record<string, unknown>> }).objects.find(
    (o) => o.name === OBJECT,
  )!;
}

beforeAll(async () => {
  f = await startDeviceLinkFixture();
  for (let i = 0; i < 3; i++) {
    const d = await f.device();
    await provisionOverDeviceLink(f.call, d);
    devices.push(d);
  }
  bare = await f.device(); // allow-listed, never enrolled
});
afterAll(async () => {
  await f?.svc.stop();
});

describe('el2g devices rotate', () => {
  it.each([
    ['no selector', {}, 400, 'invalid_request', /exactly one/],
    ['two selectors', { all: true, group: GROUP }, 400, 'invalid_request', /exactly one/],
    ['a malformed id', { devices: ['0x12'] }, 400, 'invalid_device_id', /0x12/],
    [
      'an unknown device',
      { devices: ['0x04005001eee3ba1ee96e60047e57da0f9999'] },
      404,
      'not_found',
      /not on this factory's allow-list.*nothing was marked/,
    ],
    ['an unknown group', { group: 'fio-nope' }, 404, 'not_found', /fio-nope/],
    ['an unknown object', { all: true, object: 'nope' }, 404, 'not_found', /"nope"/],
    ['a KEYPAIR object', { all: true, object: 'fio-device-gateway-ca-kp' }, 404, 'not_found', /CERTIFICATE/],
    ['nothing to rotate', { devices: ['BARE'] }, 409, 'conflict', /no live certificate/],
  ])('refuses %s as problem+json and marks nothing', async (_name, body, status, code, detail) => {
    const sent = JSON.parse(JSON.stringify(body).replace('BARE', `0x${bare.uid.hex}`));
    const answer = await rotate(sent);
    expect(answer.status).toBe(status);
    expect(answer.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(answer.json.code).toBe(code);
    expect(answer.json.detail).toMatch(detail);
    expect(await marked()).toEqual([]);
  });

  it('marks one device: its manifest says rotate, the others do not, show tells when', async () => {
    expect((await manifestEntry(devices[0]!)).rotate).toBe(false);
    const answer = await rotate({ devices: [`0x${devices[0]!.uid.hex}`] });
    expect(answer.status).toBe(200);
    expect(answer.json).toEqual({ devices: 1, marked: 1, alreadyMarked: 0 });
    expect((await manifestEntry(devices[0]!)).rotate).toBe(true);
    expect((await manifestEntry(devices[1]!)).rotate).toBe(false);
    const show = await f.svc.call(
      'GET',
      `/ota/factories/demo/el2g-proxy/rtp/devices/0x${devices[0]!.uid.hex}/secure-object-provisionings`,
    );
    const cert = show.json.content.find((o: { secureObjectName: string }) => o.secureObjectName === OBJECT);
    expect(cert.renewal.rotationRequestedAt).toMatch(/^\d{4}-\d\d-\d\dT/);
    // marking again counts it as already marked and changes nothing
    expect((await rotate({ devices: [devices[0]!.uid.decimal] })).json).toEqual({
      devices: 1,
      marked: 0,
      alreadyMarked: 1,
    });
  });

  it('clears when the device reports a newer certificate, which supersedes the marked one', async () => {
    const [old] = await marked();
    await provisionOverDeviceLink(f.call, devices[0]!);
    const entry = await manifestEntry(devices[0]!);
    expect(entry.rotate).toBe(false);
    expect(entry.certificateSerial).not.toBe(old);
    const row = await f.svc.service.ctx.database.db
      .selectFrom('certificates')
      .select(['revoked_at', 'revocation_reason'])
      .where('serial_hex', '=', old!)
      .executeTakeFirstOrThrow();
    expect(row.revoked_at).not.toBeNull();
    expect(row.revocation_reason).toBe('superseded');
    expect(await marked()).toEqual([old]); // the revoked one keeps its mark; no live one has it
  });

  it('marks a whole group, one live certificate per device and object', async () => {
    const answer = await rotate({ group: GROUP, object: OBJECT });
    expect(answer.status).toBe(200);
    expect(answer.json).toEqual({ devices: 4, marked: 3, alreadyMarked: 0 });
    for (const d of devices) expect((await manifestEntry(d)).rotate).toBe(true);
  });
});

describe('el2g certificates expiring', () => {
  const expiring = (within: string) =>
    f.svc.call('GET', `/ota/factories/demo/el2g/certificates/expiring?within=${encodeURIComponent(within)}`);

  it('lists live certificates by group, soonest first, inside the window only', async () => {
    const db = f.svc.service.ctx.database.db;
    const live = await db
      .selectFrom('certificates')
      .select(['id', 'serial_hex', 'not_after'])
      .where('revoked_at', 'is', null)
      .orderBy('id')
      .execute();
    expect(live).toHaveLength(3);
    // one certificate expires in 10 days, one in 40; the third keeps its long validity
    const soon = new Date(Date.now() + 10 * 86_400_000).toISOString();
    const later = new Date(Date.now() + 40 * 86_400_000).toISOString();
    await db.updateTable('certificates').set({ not_after: later }).where('id', '=', live[0]!.id).execute();
    await db.updateTable('certificates').set({ not_after: soon }).where('id', '=', live[1]!.id).execute();

    const month = await expiring('30d');
    expect(month.status).toBe(200);
    expect(month.json.truncated).toBe(false);
    expect(month.json.certificates.map((c: { serial: string }) => c.serial)).toEqual([live[1]!.serial_hex]);
    expect(month.json.certificates[0]).toMatchObject({
      group: GROUP,
      object: OBJECT,
      notAfter: soon,
      rotationRequested: true,
    });

    const quarter = await expiring('90d');
    expect(quarter.json.certificates.map((c: { serial: string }) => c.serial)).toEqual([
      live[1]!.serial_hex,
      live[0]!.serial_hex,
    ]);
    // revoked (superseded) certificates are never listed
    const all = await expiring('100y');
    expect(all.json.certificates).toHaveLength(3);
  });

  it.each(['30', '0d', 'soon', '101y'])('refuses within=%s as problem+json', async (within) => {
    const answer = await expiring(within);
    expect(answer.status).toBe(400);
    expect(answer.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(answer.json.code).toBe('invalid_request');
    expect(answer.json.detail).toMatch(/duration/);
  });
});

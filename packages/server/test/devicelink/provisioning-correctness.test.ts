import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { createCsr, decodeCertsOnly, parseCertificate, softSigner } from '@keyferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type DeviceLinkFixture,
  freshCsr,
  SE050,
  startDeviceLinkFixture,
  type TestDevice,
} from './fixture.ts';

/**
 * Issue 11 items 1–3: what the device-link says and keeps about an object that already has
 * a certificate, when the device is re-added or sends a refused request.
 */
const EST = '/.well-known/est';
const CSR_HEADERS = { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' };
let f: DeviceLinkFixture;

beforeAll(async () => {
  f = await startDeviceLinkFixture();
  // a second pair (AWS IoT) so a key can be offered to another object of the same device
  const aws = await f.svc.call('POST', '/ota/factories/demo/el2g/aws-iot/', {
    body: { 'registration-code': 'b'.repeat(64) },
  });
  expect(aws.status, JSON.stringify(aws.json)).toBe(201);
});
afterAll(async () => {
  await f?.svc.stop();
});

function enroll(
  device: TestDevice,
  base64: string,
  label = 'fio-device-gateway-ca',
  op: 'simpleenroll' | 'simplereenroll' = 'simpleenroll',
) {
  return f.call(device, {
    method: 'POST',
    path: `${EST}/${label}/${op}`,
    headers: CSR_HEADERS,
    body: base64,
  });
}

function serialOf(text: string): string {
  return parseCertificate(decodeCertsOnly(new Uint8Array(Buffer.from(text, 'base64')))[0]!).serialHex;
}

async function manifestObject(device: TestDevice, name: string) {
  const manifest = await f.call(device, { path: '/device-link/v1/manifest' });
  expect(manifest.status, manifest.text).toBe(200);
  return manifest.json.objects.find((o: { name: string }) => o.name === name);
}

async function report(device: TestDevice, names: string[]) {
  const res = await f.call(device, {
    method: 'POST',
    path: '/device-link/v1/report',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ results: names.map((name) => ({ name, status: 'SUCCESS' })) }),
  });
  expect(res.status, res.text).toBe(200);
}

/** A device with the gateway pair enrolled with `csr` and reported as provisioned. */
async function provisioned(csr?: { base64: string }) {
  const device = await f.device();
  const key = csr ?? (await freshCsr());
  const first = await enroll(device, key.base64);
  expect(first.status, first.text).toBe(200);
  await report(device, ['fio-device-gateway-ca-kp', 'fio-device-gateway-ca']);
  return { device, key, serial: serialOf(first.text) };
}

const states = (device: TestDevice) => f.states(device);

/** The device's certificates, oldest first: serial and revocation reason. */
const certificateRows = (device: TestDevice) =>
  f.svc.service.ctx.database.db
    .selectFrom('certificates')
    .select(['serial_hex', 'revocation_reason'])
    .where('subject_cn', '=', device.uid.hex)
    .orderBy('id')
    .execute();

function allowList(method: 'POST' | 'DELETE', device: TestDevice) {
  return f.svc.call(method, '/ota/factories/demo/el2g/devices/', {
    body: { 'product-id': SE050, devices: [device.uid.decimal] },
  });
}

describe('a device deleted from the allow-list and added again provisions again', () => {
  it('the manifest names the live certificate serial, null once it is revoked; the same key gets a new certificate', async () => {
    const { device, key, serial } = await provisioned();
    expect((await manifestObject(device, 'fio-device-gateway-ca')).certificateSerial).toBe(serial);
    expect((await manifestObject(device, 'fio-device-gateway-ca-kp')).certificateSerial).toBeUndefined();

    expect((await allowList('DELETE', device)).status).toBe(200);
    expect((await allowList('POST', device)).status).toBe(200);
    const readded = await manifestObject(device, 'fio-device-gateway-ca');
    expect(readded).toMatchObject({ state: 'GENERATION_TRIGGERED', certificateSerial: null });

    // the device enrolls the key it still holds: a new certificate, not the revoked one
    const again = await enroll(device, key.base64);
    expect(again.status, again.text).toBe(200);
    const renewed = serialOf(again.text);
    expect(renewed).not.toBe(serial);
    expect((await manifestObject(device, 'fio-device-gateway-ca')).certificateSerial).toBe(renewed);
    await report(device, ['fio-device-gateway-ca-kp', 'fio-device-gateway-ca']);
    expect((await states(device))['fio-device-gateway-ca']).toEqual({
      state: 'PROVISIONING_COMPLETED',
      reason: null,
    });
    const rows = await certificateRows(device);
    expect(rows.map((r) => [r.serial_hex, r.revocation_reason])).toEqual([
      [serial, 'device deleted from the allow-list'],
      [renewed, null],
    ]);
  });
});

describe('a refused request does not mark a provisioned object failed', () => {
  it('a bad CSR (AAAA) for a provisioned object → csr_invalid, audited, state stays PROVISIONING_COMPLETED', async () => {
    const { device } = await provisioned();
    const before = await states(device);
    const res = await enroll(device, 'AAAA');
    expect(res.status).toBe(400);
    expect(res.json.code).toBe('csr_invalid');
    expect(await states(device)).toEqual(before);
    expect(before['fio-device-gateway-ca']).toEqual({ state: 'PROVISIONING_COMPLETED', reason: null });
    const audit = await f.svc.service.ctx.database.db
      .selectFrom('audit_log')
      .select(['action', 'detail'])
      .where('correlation_id', '=', String(res.headers['x-correlation-id']))
      .execute();
    expect(audit.map((a) => [a.action, JSON.parse(a.detail).code])).toEqual([
      ['device-link.refused', 'csr_invalid'],
    ]);
  });

  it('a bad CSR for an object never issued still says GENERATION_FAILED with the reason', async () => {
    const device = await f.device();
    expect((await enroll(device, 'AAAA')).json.code).toBe('csr_invalid');
    expect((await states(device))['fio-device-gateway-ca']).toEqual({
      state: 'GENERATION_FAILED',
      reason: expect.stringMatching(/^csr_invalid: /),
    });
  });
});

describe('one key, one purpose: csr_key_reused', () => {
  it('a CSR for the vendor identity key is refused; nothing issued, the object says why', async () => {
    const device = await f.device();
    const signer = softSigner(createPrivateKey(device.key));
    const der = await createCsr({ subject: { CN: device.uid.hex }, signer });
    const certificates = await f.count('certificates');
    const res = await enroll(device, Buffer.from(der).toString('base64'));
    expect(res.status).toBe(400);
    expect(res.json.code).toBe('csr_key_reused');
    expect(res.json.detail).toMatch(
      /the CSR's key is the secure element's vendor identity key \(0xF0000000\).*make the CSR with the key at 0x83000042 \(fio-device-gateway-ca-kp\)/,
    );
    expect(await f.count('certificates')).toBe(certificates);
    expect((await states(device))['fio-device-gateway-ca']).toEqual({
      state: 'GENERATION_FAILED',
      reason: expect.stringMatching(/^csr_key_reused: /),
    });
  });

  it('a CSR for the gateway key offered to aws-iot-ca is refused; the gateway object keeps its state', async () => {
    const { device, key } = await provisioned();
    const before = await states(device);
    const certificates = await f.count('certificates');
    const res = await enroll(device, key.base64, 'aws-iot-ca');
    expect(res.json.code, res.text).toBe('csr_key_reused');
    expect(res.json.detail).toMatch(
      /already certified for fio-device-gateway-ca on this device; make the CSR with the key at 0x83000044 \(aws-iot-ca-kp\)/,
    );
    expect(await f.count('certificates')).toBe(certificates);
    const after = await states(device);
    expect(after['fio-device-gateway-ca']).toEqual(before['fio-device-gateway-ca']);
    expect(after['fio-device-gateway-ca']?.state).toBe('PROVISIONING_COMPLETED');
    // the refused object (never issued) says why, though the refusal came from inside the
    // enrollment's transaction, which stored nothing else
    expect(after['aws-iot-ca']).toEqual({
      state: 'GENERATION_FAILED',
      reason: expect.stringMatching(
        /^csr_key_reused: the CSR's key is already certified for fio-device-gateway-ca/,
      ),
    });
    // its own key is accepted
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const own = await createCsr({ subject: { CN: 'aws' }, signer: softSigner(privateKey) });
    expect((await enroll(device, Buffer.from(own).toString('base64'), 'aws-iot-ca')).status).toBe(200);
  });
});

describe('a device that lost a renewal and enrolls its old key again keeps the certificate it is given', () => {
  it('the unreported renewal is superseded, so the report keeps the returned certificate live', async () => {
    const { device, key, serial } = await provisioned();
    // a renewal to a new key whose answer the device never stored
    const renewal = await enroll(
      device,
      (await freshCsr()).base64,
      'fio-device-gateway-ca',
      'simplereenroll',
    );
    expect(renewal.status, renewal.text).toBe(200);
    const lost = serialOf(renewal.text);
    expect((await manifestObject(device, 'fio-device-gateway-ca')).certificateSerial).toBe(lost);
    // back to the key it holds: the same certificate, which the service now names as live
    const again = await enroll(device, key.base64);
    expect(again.status, again.text).toBe(200);
    expect(serialOf(again.text)).toBe(serial);
    expect((await manifestObject(device, 'fio-device-gateway-ca')).certificateSerial).toBe(serial);
    await report(device, ['fio-device-gateway-ca-kp', 'fio-device-gateway-ca']);
    const rows = await certificateRows(device);
    expect(rows.map((r) => [r.serial_hex, r.revocation_reason])).toEqual([
      [serial, null],
      [lost, 'superseded'],
    ]);
  });
});

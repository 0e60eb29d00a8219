import { X509Certificate } from 'node:crypto';
import { decodeCertsOnly, fromPem, parseCertificate, toPem, verifyChain } from '@keyferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deviceLinkCall } from '../../../../test/support/device-link.ts';
import { BACKENDS } from '../support/databases.ts';
import { type DeviceLinkFixture, freshCsr, startDeviceLinkFixture, type TestDevice } from './fixture.ts';

const EST = '/.well-known/est/fio-device-gateway-ca';
let f: DeviceLinkFixture;

function enroll(device: TestDevice, base64: string, op = 'simpleenroll') {
  return f.call(device, {
    method: 'POST',
    path: `${EST}/${op}`,
    headers: { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' },
    body: base64,
  });
}

function certsOf(text: string): Uint8Array[] {
  return decodeCertsOnly(new Uint8Array(Buffer.from(text, 'base64')));
}

const states = (device: TestDevice) => f.states(device);

describe.each(BACKENDS)('device-link on %s: the provisioning flow of one device', (backend) => {
  beforeAll(async () => {
    f = await startDeviceLinkFixture(backend);
  });
  afterAll(async () => {
    await f?.svc.stop();
  });

  it('answers the manifest, issues by the device profile, is idempotent, rotates, takes the report', async () => {
    const device = await f.device();
    const manifest = await f.call(device, { path: '/device-link/v1/manifest' });
    expect(manifest.status).toBe(200);
    expect(manifest.headers['x-correlation-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(manifest.json).toEqual({
      device: device.uid.decimal,
      product: '935389312472',
      group: 'fio-935389312472',
      objects: [
        {
          name: 'fio-device-gateway-ca-kp',
          type: 'KEYPAIR',
          objectId: '83000042',
          label: 'SE_83000042',
          state: 'GENERATION_TRIGGERED',
        },
        {
          name: 'fio-device-gateway-ca',
          type: 'CERTIFICATE',
          objectId: '83000043',
          keyObjectId: '83000042',
          label: 'SE_83000043',
          state: 'GENERATION_TRIGGERED',
          certificateSerial: null,
          notAfter: null,
          renewal: {
            validityDays: 365,
            windowDays: 30,
            validitySeconds: 31_536_000,
            windowSeconds: 2_592_000,
          },
          rotate: false,
        },
      ],
    });

    // plain 127.0.0.1 without SNI reaches the only factory (single-factory mode)
    const local = await deviceLinkCall({
      address: f.address,
      ca: f.serviceCa,
      key: device.key,
      cert: device.cert,
      path: '/device-link/v1/manifest',
    });
    expect(local.json?.device, local.text).toBe(device.uid.decimal);

    const cacerts = await f.call(device, { path: `${EST}/cacerts` });
    expect(cacerts.status).toBe(200);
    expect(cacerts.headers['content-type']).toBe('application/pkcs7-mime; smime-type=certs-only');
    const chain = certsOf(cacerts.text).map((der) => toPem(der, 'CERTIFICATE'));
    expect(chain).toEqual([f.pki.intermediatePem, f.pki.rootPem]);

    const csr = await freshCsr();
    const first = await enroll(device, csr.base64);
    expect(first.status, first.text).toBe(200);
    expect(first.headers['content-transfer-encoding']).toBe('base64');
    const [issued] = certsOf(first.text);
    const cert = parseCertificate(issued!);
    expect(cert.subjectAttributes).toMatchObject({
      CN: device.uid.hex,
      OU: 'demo',
      serialNumber: device.uid.decimal,
    });
    expect(Buffer.from(cert.spki).equals(Buffer.from(csr.spki))).toBe(true);
    expect(cert.extKeyUsage).toEqual(['clientAuth']);
    verifyChain(issued!, [fromPem(f.pki.intermediatePem)], [fromPem(f.pki.rootPem)], new Date(), {
      purpose: 'clientAuth',
    });
    expect(new X509Certificate(issued!).subject).not.toContain('ignored');
    expect(await states(device)).toEqual({
      'fio-device-gateway-ca-kp': { state: 'GENERATION_COMPLETED', reason: null },
      'fio-device-gateway-ca': { state: 'GENERATION_COMPLETED', reason: null },
    });

    const again = await enroll(device, csr.base64);
    expect(certsOf(again.text)[0]).toEqual(issued);

    const report = await f.call(device, {
      method: 'POST',
      path: '/device-link/v1/report',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        results: [
          { name: 'fio-device-gateway-ca-kp', status: 'SUCCESS' },
          { name: 'fio-device-gateway-ca', status: 'SUCCESS' },
        ],
      }),
    });
    expect(report.status, report.text).toBe(200);
    expect((await states(device))['fio-device-gateway-ca']!.state).toBe('PROVISIONING_COMPLETED');

    const rotated = await enroll(device, (await freshCsr()).base64, 'simplereenroll');
    expect(rotated.status, rotated.text).toBe(200);
    const [renewed] = certsOf(rotated.text);
    expect(renewed).not.toEqual(issued);
    const certRows = () =>
      f.svc.service.ctx.database.db
        .selectFrom('certificates')
        .select(['serial_hex', 'ca_id', 'revoked_at', 'revocation_reason'])
        .where('subject_cn', '=', device.uid.hex)
        .orderBy('id')
        .execute();
    // a renewal revokes nothing until the device reports the new certificate stored
    expect((await certRows()).map((r) => [r.serial_hex, r.revocation_reason])).toEqual([
      [cert.serialHex, null],
      [parseCertificate(renewed!).serialHex, null],
    ]);
    expect((await states(device))['fio-device-gateway-ca']!.state).toBe('GENERATION_COMPLETED');
    const stored = await f.call(device, {
      method: 'POST',
      path: '/device-link/v1/report',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ results: [{ name: 'fio-device-gateway-ca', status: 'SUCCESS' }] }),
    });
    expect(stored.status, stored.text).toBe(200);
    const rows = await certRows();
    expect(rows.map((r) => [r.serial_hex, r.revocation_reason])).toEqual([
      [cert.serialHex, 'superseded'],
      [parseCertificate(renewed!).serialHex, null],
    ]);
    // the report scheduled the re-sign of the CA's CRL: done after the answer, before anyone fetched it
    await f.svc.service.ctx.crlRefresher.settled();
    const crl = await f.svc.service.ctx.database.db
      .selectFrom('crls')
      .select(['revoked_count', 'revoked_latest'])
      .where('ca_id', '=', rows[0]!.ca_id)
      .executeTakeFirst();
    expect(crl).toEqual({ revoked_count: 1, revoked_latest: rows[0]!.revoked_at });
    expect((await states(device))['fio-device-gateway-ca']!.state).toBe('PROVISIONING_COMPLETED');

    const listed = await f.svc.call('GET', '/ota/factories/demo/audit/?limit=50');
    const actions = listed.json.entries
      .filter((e: any) => e.actor === `device:${device.uid.decimal}`)
      .map((e: any) => [e.action, e.correlationId]);
    expect(actions).toContainEqual(['device-link.manifest', manifest.headers['x-correlation-id']]);
    expect(actions).toContainEqual(['device-link.enroll', first.headers['x-correlation-id']]);
    expect(actions).toContainEqual(['device-link.report', report.headers['x-correlation-id']]);
    const row = await f.svc.service.ctx.database.db
      .selectFrom('devices')
      .select('last_connection')
      .where('device_id', '=', device.uid.decimal)
      .executeTakeFirstOrThrow();
    expect(row.last_connection).not.toBeNull();
  });
});

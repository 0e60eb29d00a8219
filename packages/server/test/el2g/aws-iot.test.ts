import { execFileSync } from 'node:child_process';
import {
  decodeCertsOnly,
  fromPem,
  parseCertificate,
  toPem,
  verifyCertificateSignature,
  verifyChain,
} from '@keyferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type DeviceLinkFixture,
  freshCsr,
  startDeviceLinkFixture,
  type TestDevice,
} from '../devicelink/fixture.ts';
import { BACKENDS } from '../support/databases.ts';

const F = '/ota/factories/demo';
const CODE = 'a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90';
const AWS_EST = '/.well-known/est/aws-iot-ca';
const GW_EST = '/.well-known/est/fio-device-gateway-ca';

function certsOf(text: string): Uint8Array[] {
  return decodeCertsOnly(new Uint8Array(Buffer.from(text, 'base64')));
}

/** openssl as an independent verifier: does `leaf` chain to the self-signed `ca`? */
function opensslVerifies(f: DeviceLinkFixture, caPem: string, leafPem: string): string {
  return execFileSync(
    'openssl',
    ['verify', '-CAfile', f.writeTemp('ca.pem', caPem), f.writeTemp('leaf.pem', leafPem)],
    {
      encoding: 'utf8',
    },
  ).trim();
}

describe.each(BACKENDS)('POST el2g/aws-iot/ on %s', (backend) => {
  let f: DeviceLinkFixture;
  let device: TestDevice;

  beforeAll(async () => {
    f = await startDeviceLinkFixture(backend);
    // A device provisioned with the gateway pair before AWS IoT is configured.
    device = await f.device();
    expect((await f.call(device, { path: '/device-link/v1/manifest' })).status).toBe(200);
    const enrolled = await f.call(device, {
      method: 'POST',
      path: `${GW_EST}/simpleenroll`,
      headers: { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' },
      body: (await freshCsr()).base64,
    });
    expect(enrolled.status, enrolled.text).toBe(200);
  });
  afterAll(async () => {
    await f?.svc.stop();
  });

  const post = (body: unknown, raw?: string) =>
    f.svc.call(
      'POST',
      `${F}/el2g/aws-iot/`,
      raw === undefined ? { body } : { raw, headers: { 'content-type': 'application/json' } },
    );

  /** Everything a refusal must leave as it was. */
  async function snapshot() {
    const db = f.svc.service.ctx.database.db;
    const count = async (
      table: 'custody_keys' | 'group_objects' | 'audit_log' | 'intermediate_cas' | 'secure_objects',
    ) =>
      Number(
        (
          await db
            .selectFrom(table)
            .select((eb) => eb.fn.countAll().as('n'))
            .executeTakeFirstOrThrow()
        ).n,
      );
    return {
      cas: (await f.svc.call('GET', `${F}/el2g/intermediate-cas/`)).json,
      objects: (await f.svc.call('GET', `${F}/el2g/secure-objects/`)).json,
      custodyKeys: await count('custody_keys'),
      assignments: await count('group_objects'),
      audit: await count('audit_log'),
    };
  }

  async function refused(body: unknown, code: string, message: RegExp, raw?: string) {
    const before = await snapshot();
    const res = await post(body, raw);
    expect(res.status, JSON.stringify(res.json)).toBeGreaterThanOrEqual(400);
    expect(res.json.code).toBe(code);
    expect(res.json.detail).toMatch(message);
    expect(await snapshot()).toEqual(before);
    return res.json;
  }

  it('refuses missing, empty, oversize and odd registration codes and unknown fields, changing nothing', async () => {
    const shape = /registration-code must be 1-64 letters, digits/;
    await refused({}, 'invalid_request', /field "registration-code"/);
    await refused({ 'registration-code': '' }, 'invalid_request', shape);
    await refused({ 'registration-code': 'a'.repeat(65) }, 'invalid_request', shape);
    await refused({ 'registration-code': 'x'.repeat(5000) }, 'invalid_request', /at most 64 characters/);
    await refused({ 'registration-code': 'abc def' }, 'invalid_request', shape);
    await refused({ 'registration-code': 'CN=x,O=evil' }, 'invalid_request', shape);
    await refused({ 'registration-code': 'cödé' }, 'invalid_request', shape);
    await refused({ 'registration-code': 1234 }, 'invalid_request', /field "registration-code"/);
    await refused({ 'registration-code': CODE, ca: 'x' }, 'unknown_field', /"ca"/);
    await refused(undefined, 'invalid_json', /./, '{"registration-code":');
  });

  it('refuses object_quota_exceeded naming what uses the plan, and creates nothing (no key either)', async () => {
    const other = await f.svc.call('POST', `${F}/el2g-proxy/secure-objects`, {
      body: { name: 'other-service-kp', type: 'KEYPAIR', objectId: '83000050' },
    });
    expect(other.status, JSON.stringify(other.json)).toBe(201);
    const json = await refused(
      { 'registration-code': CODE },
      'object_quota_exceeded',
      /device group fio-935389312472 already holds 2 of the plan's 2 key pairs per device \(fio-device-gateway-ca-kp, other-service-kp\); AWS IoT needs one more/,
    );
    expect(json.info).toMatchObject({ group: 'fio-935389312472', limit: 'max_keypairs', usage: 2, max: 2 });
    expect((await f.svc.call('DELETE', `${F}/el2g-proxy/secure-objects/${other.json.id}`)).status).toBe(204);
  });

  let caPem: string;
  let firstSerial: string;

  it('creates the self-signed aws-iot-ca, its two objects in every group, and a verification certificate', async () => {
    const before = await snapshot();
    // Two first calls at once make one CA: one creates it (201), the other reuses it (200).
    const both = await Promise.all([
      post({ 'registration-code': CODE }),
      post({ 'registration-code': CODE }),
    ]);
    expect(both.map((r) => r.status).sort(), JSON.stringify(both.map((r) => r.json))).toEqual([200, 201]);
    const res = both.find((r) => r.status === 201)!;
    expect(both.find((r) => r.status === 200)!.json.ca).toBe(res.json.ca);
    expect((await snapshot()).custodyKeys).toBe(before.custodyKeys + 1);
    expect(Object.keys(res.json).sort()).toEqual(['ca', 'cert']);
    caPem = res.json.ca;
    const ca = parseCertificate(fromPem(caPem, 'CERTIFICATE'));
    expect(ca.subject.text).toBe('CN=aws-iot-ca,OU=demo');
    expect(ca.issuer.text).toBe(ca.subject.text);
    expect(ca.isCa).toBe(true);
    expect(ca.pathLen).toBe(0);
    expect(ca.keyUsage).toContain('keyCertSign');
    expect(ca.notAfter.getUTCFullYear() - ca.notBefore.getUTCFullYear()).toBe(10);
    expect(verifyCertificateSignature(ca.der, ca.spki)).toBe(true);

    const cert = parseCertificate(fromPem(res.json.cert, 'CERTIFICATE'));
    expect(cert.subject.text).toBe(`CN=${CODE}`);
    expect(cert.isCa).toBe(false);
    expect(opensslVerifies(f, caPem, res.json.cert)).toMatch(/: OK$/);
    firstSerial = cert.serialHex;

    const cas = (await f.svc.call('GET', `${F}/el2g/intermediate-cas/`)).json;
    expect(cas.map((c: { name: string }) => c.name)).toEqual(['fio-device-gateway-ca', 'aws-iot-ca']);
    expect(cas[1]).toMatchObject({ algorithm: 'NIST_P256', value: caPem });
    const objects = (await f.svc.call('GET', `${F}/el2g/secure-objects/`)).json;
    expect(
      objects.map((o: { type: string; name: string; 'object-id': string }) => [
        o.type,
        o.name,
        o['object-id'],
      ]),
    ).toEqual([
      ['CERTIFICATE', 'aws-iot-ca', '83000045'],
      ['CERTIFICATE', 'fio-device-gateway-ca', '83000043'],
      ['KEYPAIR', 'aws-iot-ca-kp', '83000044'],
      ['KEYPAIR', 'fio-device-gateway-ca-kp', '83000042'],
    ]);
    const proxied = (await f.svc.call('GET', `${F}/el2g-proxy/secure-objects`)).json.content;
    const awsKp = proxied.find((o: { name: string }) => o.name === 'aws-iot-ca-kp');
    expect(proxied.find((o: { name: string }) => o.name === 'aws-iot-ca')).toMatchObject({
      caId: cas[1].id,
      keypairId: awsKp.id,
    });
    for (const group of (await f.svc.call('GET', `${F}/el2g-proxy/device-groups`)).json.content) {
      const held = (await f.svc.call('GET', `${F}/el2g-proxy/device-groups/${group.id}/secure-objects`)).json
        .content;
      expect(held.map((o: { name: string }) => o.name).sort()).toEqual([
        'aws-iot-ca',
        'aws-iot-ca-kp',
        'fio-device-gateway-ca',
        'fio-device-gateway-ca-kp',
      ]);
    }
    const actions = (await f.svc.call('GET', `${F}/audit/?limit=20`)).json.entries
      .filter((e: { correlationId: string }) => e.correlationId === res.headers.get('x-correlation-id'))
      .map((e: { action: string; object: string }) => `${e.action} ${e.object}`)
      .sort();
    expect(actions).toEqual([
      'aws-iot.verification-certificate intermediate-ca:aws-iot-ca',
      'intermediate-ca.create intermediate-ca:aws-iot-ca',
      'secure-object.assign secure-object:aws-iot-ca',
      'secure-object.assign secure-object:aws-iot-ca',
      'secure-object.assign secure-object:aws-iot-ca-kp',
      'secure-object.assign secure-object:aws-iot-ca-kp',
      'secure-object.create secure-object:aws-iot-ca',
      'secure-object.create secure-object:aws-iot-ca-kp',
    ]);
  });

  it('reuses the CA and objects on a re-run and signs a fresh verification certificate', async () => {
    const before = await snapshot();
    const again = await post({ 'registration-code': CODE });
    expect(again.status).toBe(200);
    expect(again.json.ca).toBe(caPem);
    const cert = parseCertificate(fromPem(again.json.cert, 'CERTIFICATE'));
    expect(cert.serialHex).not.toBe(firstSerial);
    const other = await post({ 'registration-code': 'new-code_2.x' });
    expect(other.status).toBe(200);
    expect(other.json.ca).toBe(caPem);
    expect(parseCertificate(fromPem(other.json.cert, 'CERTIFICATE')).subject.text).toBe('CN=new-code_2.x');
    expect(opensslVerifies(f, caPem, other.json.cert)).toMatch(/: OK$/);
    expect(await snapshot()).toEqual({ ...before, audit: before.audit + 2 });
  });

  it('gives a device provisioned earlier the AWS pair on its next run, issued under aws-iot-ca alone', async () => {
    const rtp = await f.svc.call(
      'GET',
      `${F}/el2g-proxy/rtp/devices/${device.uid.decimal}/secure-object-provisionings`,
    );
    const states = Object.fromEntries(
      rtp.json.content.map((o: { secureObjectName: string; provisioningState: string }) => [
        o.secureObjectName,
        o.provisioningState,
      ]),
    );
    expect(states).toMatchObject({
      'aws-iot-ca-kp': 'GENERATION_ON_CONNECTION',
      'aws-iot-ca': 'GENERATION_ON_CONNECTION',
      'fio-device-gateway-ca': 'GENERATION_COMPLETED',
    });
    const manifest = await f.call(device, { path: '/device-link/v1/manifest' });
    expect(manifest.json.objects).toContainEqual({
      name: 'aws-iot-ca',
      type: 'CERTIFICATE',
      objectId: '83000045',
      keyObjectId: '83000044',
      label: 'SE_83000045',
      state: 'GENERATION_TRIGGERED',
      certificateSerial: null,
      notAfter: null,
      renewal: { validityDays: 365, windowDays: 30, validitySeconds: 31_536_000, windowSeconds: 2_592_000 },
      rotate: false,
    });
    const cacerts = await f.call(device, { path: `${AWS_EST}/cacerts` });
    expect(certsOf(cacerts.text).map((der) => toPem(der, 'CERTIFICATE'))).toEqual([caPem]);
    const enrolled = await f.call(device, {
      method: 'POST',
      path: `${AWS_EST}/simpleenroll`,
      headers: { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' },
      body: (await freshCsr()).base64,
    });
    expect(enrolled.status, enrolled.text).toBe(200);
    const [issued] = certsOf(enrolled.text);
    const leaf = parseCertificate(issued!);
    expect(leaf.subjectAttributes).toMatchObject({ CN: device.uid.hex, OU: 'demo' });
    verifyChain(issued!, [], [fromPem(caPem, 'CERTIFICATE')], new Date(), { purpose: 'clientAuth' });
    expect(opensslVerifies(f, caPem, toPem(issued!, 'CERTIFICATE'))).toMatch(/: OK$/);
    // AWS credentials do not open the OTA side: the gateway's CA bundle does not hold aws-iot-ca.
    const certs = (await f.svc.call('GET', `${F}/certs/`)).json;
    expect(certs['ca-crt'] ?? '').not.toContain(caPem.split('\n')[1]);
  });
});

import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { createCsr, issueCertificate, softSigner, toPem, validityFor } from '@keyferry/core';
import { randomUid } from '@keyferry/sim';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allowListDevice } from '../../../../test/support/device-link.ts';
import { createFactory } from '../../src/factories/create-factory.ts';
import {
  type DeviceLinkFixture,
  forgedIdentity,
  freshCsr,
  SE050,
  SE051,
  startDeviceLinkFixture,
  type TestDevice,
} from './fixture.ts';

const EST = '/.well-known/est/fio-device-gateway-ca';
const CSR_HEADERS = { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' };
let f: DeviceLinkFixture;

beforeAll(async () => {
  f = await startDeviceLinkFixture();
});
afterAll(async () => {
  await f?.svc.stop();
});

function enroll(
  device: TestDevice | undefined,
  body: string | Buffer,
  headers: Record<string, string> = CSR_HEADERS,
) {
  return f.call(device, { method: 'POST', path: `${EST}/simpleenroll`, headers, body });
}

/** The refusal's audit entry, found by the correlation id the device received. */
async function auditOf(correlationId: unknown) {
  return f.svc.service.ctx.database.db
    .selectFrom('audit_log')
    .selectAll()
    .where('correlation_id', '=', String(correlationId))
    .execute();
}

async function objectState(device: TestDevice, name = 'fio-device-gateway-ca') {
  return f.svc.service.ctx.database.db
    .selectFrom('device_objects')
    .innerJoin('devices', 'devices.id', 'device_objects.device_row_id')
    .innerJoin('secure_objects', 'secure_objects.id', 'device_objects.secure_object_id')
    .select(['device_objects.state', 'device_objects.reason'])
    .where('devices.device_id', '=', device.uid.decimal)
    .where('secure_objects.name', '=', name)
    .executeTakeFirst();
}

/** Runs a refused call and checks: the code, nothing issued, the audit entry saying why. */
async function expectRefused(
  call: () => Promise<{ status: number; json: any; headers: Record<string, unknown> }>,
  code: string,
  status: number,
  message?: RegExp,
) {
  const before = await f.count('certificates');
  const counts = new Map((await refusalRows()).map((r) => [r.id, r.count]));
  const res = await call();
  expect(res.json?.code, JSON.stringify(res.json)).toBe(code);
  expect(res.status).toBe(status);
  expect(res.headers['content-type']).toBe('application/problem+json');
  if (message) expect(res.json.detail).toMatch(message);
  expect(await f.count('certificates')).toBe(before);
  // refusals are counted: a repeat of the caller, reason and minute adds to an existing row
  const after = await refusalRows();
  const changed = after.filter((r) => r.count !== (counts.get(r.id) ?? 0));
  expect(
    changed.map((e) => [e.action, JSON.parse(e.detail).code, e.count - (counts.get(e.id) ?? 0)]),
  ).toEqual([['device-link.refused', code, 1]]);
  return Object.assign(res, { entry: changed[0]! });
}

async function refusalRows() {
  return f.svc.service.ctx.database.db
    .selectFrom('audit_log')
    .selectAll()
    .where('action', '=', 'device-link.refused')
    .execute();
}

describe('device-link refuses who the device is not', () => {
  it('no client certificate → 401 unauthenticated', async () => {
    await expectRefused(
      () => f.call(undefined, { path: '/device-link/v1/manifest' }),
      'unauthenticated',
      401,
      /no client certificate/,
    );
  });

  it('a self-signed identity → untrusted_identity', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const uid = randomUid();
    const subject = { OU: SE050, CN: uid.hex, serialNumber: uid.hex };
    const spki = new Uint8Array(publicKey.export({ format: 'der', type: 'spki' }));
    const der = await issueCertificate({
      issuer: { name: subject, publicKeySpki: spki },
      subject,
      subjectPublicKeySpki: spki,
      ...validityFor(new Date(), { years: 1 }),
      extensions: { basicConstraints: { ca: false }, extKeyUsage: ['clientAuth'] },
      signer: softSigner(privateKey),
    });
    const device = {
      uid,
      key: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
      cert: toPem(der, 'CERTIFICATE'),
    };
    await allowListDevice(f.svc.service.ctx.database.db, 'demo', uid.decimal, SE050);
    await expectRefused(
      () => f.call(device, { path: '/device-link/v1/manifest' }),
      'untrusted_identity',
      403,
      /does not verify/,
    );
  });

  it("an identity from another product's vendor → untrusted_identity", async () => {
    // The other vendor is trusted for SE051; this identity claims an SE050.
    const device = await forgedIdentity(f.otherVendor, { product: SE050 });
    await expectRefused(
      () => f.call(device, { path: '/device-link/v1/manifest' }),
      'untrusted_identity',
      403,
      /product 935389312472/,
    );
    // …while an SE051 identity of that vendor is trusted (and then judged by the allow-list).
    const se051 = await forgedIdentity(f.otherVendor, { product: SE051 });
    await expectRefused(
      () => f.call(se051, { path: '/device-link/v1/manifest' }),
      'device_not_allowlisted',
      403,
    );
  });

  it('an expired identity → untrusted_identity', async () => {
    const device = await forgedIdentity(f.vendor, {
      now: new Date(Date.now() - 3 * 86_400_000),
      validityDays: 1,
    });
    await expectRefused(
      () => f.call(device, { path: '/device-link/v1/manifest' }),
      'untrusted_identity',
      403,
      /expired/,
    );
  });

  it('an identity for a product the service does not know → unknown_product', async () => {
    const device = await forgedIdentity(f.vendor, { product: '999999999999' });
    await expectRefused(
      () => f.call(device, { path: '/device-link/v1/manifest' }),
      'unknown_product',
      400,
      /999999999999/,
    );
  });

  it('a UID not on the allow-list → device_not_allowlisted', async () => {
    const device = await f.device({ allowList: false });
    const res = await expectRefused(
      () => f.call(device, { path: '/device-link/v1/manifest' }),
      'device_not_allowlisted',
      403,
      /keyferry el2g devices add 935389312472 0x/,
    );
    expect(res.entry.actor).toBe(`device:${device.uid.decimal}`);
  });

  it("a device of factory A at factory B's subdomain → device_not_allowlisted", async () => {
    const device = await f.device();
    const other = await createFactory(f.svc.service.ctx, 'factory-b', {
      actor: 'test',
      correlationId: randomUUID(),
    });
    const res = await expectRefused(
      () =>
        f.call(device, {
          path: '/device-link/v1/manifest',
          servername: `${other.subdomain}.device-link.localhost`,
        }),
      'device_not_allowlisted',
      403,
      /factory factory-b/,
    );
    expect(res.entry.factory_id).toBe(other.id);
    // and a host name of no factory
    await expectRefused(
      () =>
        f.call(device, {
          path: '/device-link/v1/manifest',
          servername: 'nosuchfactory.device-link.localhost',
        }),
      'not_found',
      404,
    );
  });
});

describe('device-link refuses bad enrollments and records why', () => {
  it('an unknown label → unknown_label', async () => {
    const device = await f.device();
    const csr = await freshCsr();
    await expectRefused(
      () =>
        f.call(device, {
          method: 'POST',
          path: '/.well-known/est/no-such-ca/simpleenroll',
          headers: CSR_HEADERS,
          body: csr.base64,
        }),
      'unknown_label',
      404,
      /fio-device-gateway-ca/,
    );
    await expectRefused(
      () => f.call(device, { path: '/.well-known/est/no-such-ca/cacerts' }),
      'unknown_label',
      404,
    );
  });

  const p384 = async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const { createSign } = await import('node:crypto');
    const signer = {
      publicKeySpki: new Uint8Array(publicKey.export({ format: 'der', type: 'spki' })),
      sign: async (data: Uint8Array) => new Uint8Array(createSign('sha256').update(data).sign(privateKey)),
    };
    return Buffer.from(await createCsr({ subject: { CN: 'x' }, signer })).toString('base64');
  };
  const rsa = async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const { createSign } = await import('node:crypto');
    const signer = {
      publicKeySpki: new Uint8Array(publicKey.export({ format: 'der', type: 'spki' })),
      sign: async (data: Uint8Array) => new Uint8Array(createSign('sha256').update(data).sign(privateKey)),
    };
    return Buffer.from(await createCsr({ subject: { CN: 'x' }, signer })).toString('base64');
  };
  const badCsrs: Array<[string, () => Promise<string>, RegExp]> = [
    [
      'garbage',
      async () => Buffer.from('this is not a certification request').toString('base64'),
      /not valid DER|not a PKCS#10/,
    ],
    [
      'truncated',
      async () => Buffer.from((await freshCsr()).der.subarray(0, 60)).toString('base64'),
      /not valid DER/,
    ],
    [
      'with a bad signature',
      async () => {
        const der = Buffer.from((await freshCsr()).der);
        der[der.length - 5]! ^= 0xff;
        return der.toString('base64');
      },
      /does not verify/,
    ],
    ['with an RSA key', rsa, /CSR key is RSA; a P-256 key is required/],
    ['with a P-384 key', p384, /CSR key is P-384; a P-256 key is required/],
  ];
  for (const [what, make, why] of badCsrs) {
    it(`a CSR ${what} → csr_invalid, and the object is GENERATION_FAILED with the reason`, async () => {
      const device = await f.device();
      await expectRefused(async () => enroll(device, await make()), 'csr_invalid', 400, why);
      const state = await objectState(device);
      expect(state?.state).toBe('GENERATION_FAILED');
      expect(state?.reason).toMatch(why);
    });
  }

  it('a 1 MB CSR → body_too_large', async () => {
    const device = await f.device();
    await expectRefused(
      () => enroll(device, 'A'.repeat(1024 * 1024)),
      'body_too_large',
      413,
      /8192 bytes of DER/,
    );
    expect((await objectState(device))?.state).toBe('GENERATION_FAILED');
  });

  it('a 1 MB CSR sent chunked (no Content-Length) → body_too_large, answered before the connection closes', async () => {
    const device = await f.device();
    await expectRefused(
      () => enroll(device, 'A'.repeat(1024 * 1024), { ...CSR_HEADERS, 'transfer-encoding': 'chunked' }),
      'body_too_large',
      413,
    );
  });

  it('a wrong content type → unsupported_media_type; a DER body → csr_invalid whatever Content-Transfer-Encoding says', async () => {
    const device = await f.device();
    const csr = await freshCsr();
    await expectRefused(
      () => enroll(device, csr.base64, { 'content-type': 'application/json' }),
      'unsupported_media_type',
      415,
      /application\/pkcs10/,
    );
    for (const encoding of ['binary', undefined]) {
      await expectRefused(
        () =>
          enroll(device, Buffer.from(csr.der), {
            'content-type': 'application/pkcs10',
            ...(encoding ? { 'content-transfer-encoding': encoding } : {}),
          }),
        'csr_invalid',
        400,
        /the body is binary DER; EST takes the CSR base64-encoded whatever Content-Transfer-Encoding says \(RFC 8951\)/,
      );
    }
    expect((await objectState(device))?.reason).toMatch(/binary DER/);
    // RFC 8951: the body is base64 whatever the header says, or without it
    const binaryLabel = await enroll(device, csr.base64, {
      'content-type': 'application/pkcs10',
      'content-transfer-encoding': 'binary',
    });
    expect(binaryLabel.status, binaryLabel.text).toBe(200);
    const ok = await enroll(device, csr.base64, { 'content-type': 'application/pkcs10' });
    expect(ok.status).toBe(200);
  });

  it('a report for an object never issued → object_not_issued; states unchanged', async () => {
    const device = await f.device();
    expect((await f.call(device, { path: '/device-link/v1/manifest' })).status).toBe(200);
    await expectRefused(
      () =>
        f.call(device, {
          method: 'POST',
          path: '/device-link/v1/report',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ results: [{ name: 'fio-device-gateway-ca', status: 'SUCCESS' }] }),
        }),
      'object_not_issued',
      409,
      /never issued/,
    );
    expect((await objectState(device))?.state).toBe('GENERATION_TRIGGERED');
    // a renewal of what was never issued is refused the same way
    const csr = await freshCsr();
    await expectRefused(
      () =>
        f.call(device, {
          method: 'POST',
          path: `${EST}/simplereenroll`,
          headers: CSR_HEADERS,
          body: csr.base64,
        }),
      'object_not_issued',
      409,
      /enroll it first with simpleenroll/,
    );
  });

  it('a FAILED report before issuance → GENERATION_FAILED with the detail; SUCCESS still refused', async () => {
    const device = await f.device();
    expect((await f.call(device, { path: '/device-link/v1/manifest' })).status).toBe(200);
    const report = (results: unknown[]) =>
      f.call(device, {
        method: 'POST',
        path: '/device-link/v1/report',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ results }),
      });
    const detail =
      "token 'aktualizr' is full (CKR_DEVICE_MEMORY) while trying to generate key pair 'SE_83000042'";
    // one SUCCESS among the FAILED refuses the whole report
    await expectRefused(
      () =>
        report([
          { name: 'fio-device-gateway-ca-kp', status: 'FAILED', detail },
          { name: 'fio-device-gateway-ca', status: 'SUCCESS' },
        ]),
      'object_not_issued',
      409,
      /never issued/,
    );
    expect(await objectState(device, 'fio-device-gateway-ca-kp')).toEqual({
      state: 'GENERATION_TRIGGERED',
      reason: null,
    });
    const res = await report([
      { name: 'fio-device-gateway-ca-kp', status: 'FAILED', detail },
      { name: 'fio-device-gateway-ca', status: 'FAILED', detail },
    ]);
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    expect(res.json).toEqual({
      objects: [
        { name: 'fio-device-gateway-ca-kp', state: 'GENERATION_FAILED' },
        { name: 'fio-device-gateway-ca', state: 'GENERATION_FAILED' },
      ],
    });
    const rtp = await f.svc.call(
      'GET',
      `/ota/factories/demo/el2g-proxy/rtp/devices/${device.uid.decimal}/secure-object-provisionings`,
    );
    expect(rtp.status).toBe(200);
    const shown = rtp.json.content.map(
      (o: { secureObjectName: string; provisioningState: string; reason: string }) => [
        o.secureObjectName,
        o.provisioningState,
        o.reason,
      ],
    );
    expect(shown).toContainEqual(['fio-device-gateway-ca-kp', 'GENERATION_FAILED', detail]);
    expect(shown).toContainEqual(['fio-device-gateway-ca', 'GENERATION_FAILED', detail]);
    const audit = await auditOf(res.headers['x-correlation-id']);
    expect(audit.map((e) => [e.action, JSON.parse(e.detail).results])).toEqual([
      [
        'device-link.report',
        [
          { name: 'fio-device-gateway-ca-kp', state: 'GENERATION_FAILED', reason: detail },
          { name: 'fio-device-gateway-ca', state: 'GENERATION_FAILED', reason: detail },
        ],
      ],
    ]);
    // a retry that fails again updates the reason; SUCCESS for it is still refused
    await expectRefused(
      () => report([{ name: 'fio-device-gateway-ca', status: 'SUCCESS' }]),
      'object_not_issued',
      409,
      /state GENERATION_FAILED/,
    );
    expect(await objectState(device)).toEqual({ state: 'GENERATION_FAILED', reason: detail });
    const again = await report([
      { name: 'fio-device-gateway-ca', status: 'FAILED', detail: 'CKR_GENERAL_ERROR' },
    ]);
    expect(again.status).toBe(200);
    expect(await objectState(device)).toEqual({ state: 'GENERATION_FAILED', reason: 'CKR_GENERAL_ERROR' });
  });

  it('an evaluation plan past its end → evaluation_expired, and the object says why', async () => {
    const device = await f.device();
    const db = f.svc.service.ctx.database.db;
    const plan = await db.selectFrom('factory_el2g').selectAll().executeTakeFirstOrThrow();
    await db
      .updateTable('factory_el2g')
      .set({ enabled_at: new Date(Date.now() - 31 * 86_400_000).toISOString() })
      .where('factory_id', '=', plan.factory_id)
      .execute();
    try {
      await expectRefused(
        async () => enroll(device, (await freshCsr()).base64),
        'evaluation_expired',
        403,
        /evaluation period ended/,
      );
      expect((await objectState(device))?.reason).toMatch(/^evaluation_expired: /);
    } finally {
      await db
        .updateTable('factory_el2g')
        .set({ enabled_at: plan.enabled_at })
        .where('factory_id', '=', plan.factory_id)
        .execute();
    }
  });

  it('a device deleted between manifest and enroll → device_not_allowlisted, nothing issued', async () => {
    const device = await f.device();
    expect((await f.call(device, { path: '/device-link/v1/manifest' })).status).toBe(200);
    await f.svc.service.ctx.database.db
      .updateTable('devices')
      .set({ deleted_at: new Date().toISOString() })
      .where('device_id', '=', device.uid.decimal)
      .execute();
    await expectRefused(async () => enroll(device, (await freshCsr()).base64), 'device_not_allowlisted', 403);
    expect((await objectState(device))?.state).toBe('GENERATION_TRIGGERED');
  });
});

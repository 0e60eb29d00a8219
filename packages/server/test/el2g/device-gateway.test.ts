import { generateKeyPairSync } from 'node:crypto';
import {
  factoryRootProfile,
  fromPem,
  intermediateCaFromCsr,
  issueCertificate,
  issuerFromCertificate,
  parseCsr,
  softSigner,
  tlsServerFromCsr,
  toPem,
} from '@keyferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addFactoryProduct } from '../../src/el2g/enablement.ts';
import { createFactory } from '../../src/factories/create-factory.ts';
import { findFactoryByName } from '../../src/factories/factories.ts';
import { createApiToken } from '../../src/tokens/api-tokens.ts';
import { BACKENDS } from '../support/databases.ts';
import { startTestService, type TestService } from '../support/service.ts';

const F = '/ota/factories/demo';

function newSigner() {
  return softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
}

describe.each(BACKENDS)('el2g device gateway CA on %s', (backend) => {
  let svc: TestService;
  const rootSigner = newSigner();
  let root: Uint8Array;
  let rootPem: string;

  beforeAll(async () => {
    svc = await startTestService(backend);
    root = await factoryRootProfile({ factory: 'demo', signer: rootSigner });
    rootPem = toPem(root, 'CERTIFICATE');
    const patched = await svc.call('PATCH', `${F}/certs/`, { body: { 'root-crt': rootPem } });
    expect(patched.status).toBe(200);
  });
  afterAll(async () => {
    await svc.stop();
  });

  async function requestCsr() {
    const res = await svc.call('POST', `${F}/el2g/device-gateway/`);
    expect([200, 201]).toContain(res.status);
    return { id: res.json.id as number, csr: parseCsr(fromPem(res.json.value, 'CERTIFICATE REQUEST')) };
  }

  /** What any refusal must leave unchanged. */
  async function snapshot() {
    const db = svc.service.ctx.database.db;
    return {
      cas: (await svc.call('GET', `${F}/el2g/intermediate-cas/`)).json,
      objects: (await svc.call('GET', `${F}/el2g/secure-objects/`)).json,
      assignments: await db
        .selectFrom('group_objects')
        .selectAll()
        .orderBy('group_id')
        .orderBy('secure_object_id')
        .execute(),
      openRequests: (
        await db.selectFrom('ca_requests').select('id').where('completed_at', 'is', null).execute()
      ).length,
      audit: (await svc.call('GET', `${F}/audit/?limit=500`)).json.entries.length,
    };
  }

  async function refused(body: unknown, code: string, message: RegExp) {
    const before = await snapshot();
    const res = await svc.call('PUT', `${F}/el2g/device-gateway/`, { body });
    expect(res.status, JSON.stringify(res.json)).toBeGreaterThanOrEqual(400);
    expect(res.json.code).toBe(code);
    expect(res.json.detail).toMatch(message);
    expect(await snapshot()).toEqual(before);
  }

  it('starts with no CA and no secure objects, two groups and the subdomain', async () => {
    expect((await svc.call('GET', `${F}/el2g/intermediate-cas/`)).json).toEqual([]);
    expect((await svc.call('GET', `${F}/el2g/secure-objects/`)).json).toEqual([]);
    const overview = (await svc.call('GET', `${F}/el2g/overview/`)).json;
    expect(overview.subdomain).toMatch(/^[a-z0-9]{16}\.device-link\.localhost$/);
    expect(overview['product-ids']).toEqual([935389312472]);
    expect(overview.plan).toMatchObject({ 'max-keypairs': 2, 'max-certificates': 2 });
    const groups = (await svc.call('GET', `${F}/el2g-proxy/device-groups`)).json.content;
    expect(groups.map((g: { name: string }) => g.name)).toEqual([
      'fio-935389312472',
      'fio-935389312472-production',
    ]);
  });

  it('custody keys piled up: 200 POSTs of el2g/device-gateway/ answer one pending CSR and hold one key', async () => {
    const db = svc.service.ctx.database.db;
    const purpose = 'intermediate-ca:demo:fio-device-gateway-ca';
    const keys = async () =>
      (await db.selectFrom('custody_keys').select('id').where('purpose', '=', purpose).execute()).length;
    expect(await keys()).toBe(0);
    // first calls at once (the race on one open request), then one after another
    const concurrent = await Promise.all(
      Array.from({ length: 20 }, () => svc.call('POST', `${F}/el2g/device-gateway/`)),
    );
    const answers = [...concurrent];
    for (let i = 0; i < 180; i++) answers.push(await svc.call('POST', `${F}/el2g/device-gateway/`));
    expect(answers.filter((a) => a.status === 201)).toHaveLength(1);
    expect(answers.filter((a) => a.status === 200)).toHaveLength(199);
    const first = answers.find((a) => a.status === 201)!.json;
    expect(typeof first.id).toBe('number');
    for (const a of answers) expect(a.json).toEqual({ id: first.id, value: first.value });
    expect(await keys()).toBe(1);
    const open = await db.selectFrom('ca_requests').selectAll().where('completed_at', 'is', null).execute();
    expect(open.map((r) => r.id)).toEqual([first.id]);
    const created = await db
      .selectFrom('audit_log')
      .select('id')
      .where('action', '=', 'ca-request.create')
      .execute();
    expect(created).toHaveLength(1);
  });

  it('refuses answers that do not fit the CSR, the root or the profile, changing nothing', async () => {
    const { id, csr } = await requestCsr();
    const good = await intermediateCaFromCsr({ csr, issuerCert: root, signer: rootSigner });
    const put = (cert: Uint8Array, extra: Record<string, unknown> = {}) => ({
      id,
      'root-ca': rootPem,
      'signed-cert': toPem(cert, 'CERTIFICATE'),
      ...extra,
    });
    // another key than the CSR's
    const otherKey = await issueCertificate({
      issuer: issuerFromCertificate(root),
      subject: csr.subject.der,
      subjectPublicKeySpki: newSigner().publicKeySpki,
      notBefore: new Date(),
      notAfter: new Date(Date.now() + 86_400_000),
      extensions: { basicConstraints: { ca: true, pathLen: 0 }, keyUsage: ['keyCertSign'] },
      signer: rootSigner,
    });
    await refused(put(otherKey), 'certificate_mismatch', /does not carry the public key of the CSR/);
    // not a CA
    const leaf = await tlsServerFromCsr({
      csr,
      issuerCert: root,
      signer: rootSigner,
      dnsNames: ['x.example'],
    });
    await refused(put(leaf), 'certificate_invalid', /CA certificate with pathlen 0 \(it is not a CA\)/);
    // a CA that may have intermediates below it
    const now = new Date();
    const pathLen1 = await issueCertificate({
      issuer: issuerFromCertificate(root),
      subject: csr.subject.der,
      subjectPublicKeySpki: csr.publicKeySpki,
      notBefore: now,
      notAfter: new Date(now.getTime() + 86_400_000),
      extensions: { basicConstraints: { ca: true, pathLen: 1 }, keyUsage: ['keyCertSign'] },
      signer: rootSigner,
    });
    await refused(put(pathLen1), 'certificate_invalid', /pathlen 0 \(it is a CA with pathlen 1\)/);
    // expired
    const old = new Date(Date.now() - 11 * 365 * 86_400_000);
    const expired = await intermediateCaFromCsr({ csr, issuerCert: root, signer: rootSigner, now: old });
    await refused(put(expired), 'untrusted_chain', /expired/);
    // signed by another root, sent with that root
    const strangerSigner = newSigner();
    const stranger = await factoryRootProfile({ factory: 'demo', signer: strangerSigner });
    const foreign = await intermediateCaFromCsr({ csr, issuerCert: stranger, signer: strangerSigner });
    await refused(
      put(foreign, { 'root-ca': toPem(stranger, 'CERTIFICATE') }),
      'untrusted_chain',
      /root-ca is not this factory's root CA/,
    );
    // signed by another root, sent with the factory's root
    await refused(
      put(foreign),
      'untrusted_chain',
      /signature .* does not verify|untrusted certificate chain/,
    );
    // unknown id, garbage, unknown field
    await refused(put(good, { id: 99_999 }), 'not_found', /no fio-device-gateway-ca CSR with id 99999/);
    await refused(put(good, { 'signed-cert': 'nope' }), 'certificate_invalid', /signed-cert/);
    await refused({ ...put(good), extra: 1 }, 'unknown_field', /"extra"/);
  });

  it('creates the CA and both secure objects, assigned to every group, recorded in the audit log', async () => {
    const { id, csr } = await requestCsr();
    const cert = await intermediateCaFromCsr({ csr, issuerCert: root, signer: rootSigner });
    const res = await svc.call('PUT', `${F}/el2g/device-gateway/`, {
      body: { id: String(id), 'root-ca': rootPem, 'signed-cert': toPem(cert, 'CERTIFICATE') },
    });
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    expect(res.json).toMatchObject({
      name: 'fio-device-gateway-ca',
      algorithm: 'NIST_P256',
      created: true,
      assigned: 4,
    });
    const cas = (await svc.call('GET', `${F}/el2g/intermediate-cas/`)).json;
    expect(cas).toEqual([
      {
        id: res.json.id,
        name: 'fio-device-gateway-ca',
        algorithm: 'NIST_P256',
        value: toPem(cert, 'CERTIFICATE'),
      },
    ]);
    const objects = (await svc.call('GET', `${F}/el2g/secure-objects/`)).json;
    expect(objects.map((o: Record<string, unknown>) => [o.type, o.name, o['object-id']])).toEqual([
      ['CERTIFICATE', 'fio-device-gateway-ca', '83000043'],
      ['KEYPAIR', 'fio-device-gateway-ca-kp', '83000042'],
    ]);
    const proxy = (await svc.call('GET', `${F}/el2g-proxy/secure-objects`)).json.content;
    const kp = proxy.find((o: { type: string }) => o.type === 'KEYPAIR');
    const crt = proxy.find((o: { type: string }) => o.type === 'CERTIFICATE');
    expect(crt).toMatchObject({ caId: res.json.id, keypairId: kp.id, validityDays: null });
    for (const o of [kp, crt]) {
      const groups = (await svc.call('GET', `${F}/el2g-proxy/secure-objects/${o.id}/device-groups`)).json
        .content;
      expect(groups).toHaveLength(2);
    }
    const audit = (await svc.call('GET', `${F}/audit/?correlation-id=${res.headers.get('x-correlation-id')}`))
      .json;
    expect(audit.entries.map((e: { action: string }) => e.action).sort()).toEqual([
      'intermediate-ca.create',
      'secure-object.assign',
      'secure-object.assign',
      'secure-object.assign',
      'secure-object.assign',
      'secure-object.create',
      'secure-object.create',
    ]);
    expect(audit.entries[0].actor).toMatch(/^token:/);
    // the same CSR id cannot be answered twice
    await refused(
      { id, 'root-ca': rootPem, 'signed-cert': toPem(cert, 'CERTIFICATE') },
      'conflict',
      /already answered/,
    );
  });

  it('re-running replaces the CA key and certificate without duplicating objects', async () => {
    const before = await snapshot();
    const { id, csr } = await requestCsr();
    const cert = await intermediateCaFromCsr({ csr, issuerCert: root, signer: rootSigner });
    const res = await svc.call('PUT', `${F}/el2g/device-gateway/`, {
      body: { id, 'root-ca': rootPem, 'signed-cert': toPem(cert, 'CERTIFICATE') },
    });
    expect(res.json).toMatchObject({ created: false, assigned: 0, id: before.cas[0].id });
    const after = await snapshot();
    expect(after.objects).toEqual(before.objects);
    expect(after.assignments).toEqual(before.assignments);
    expect(after.cas).toEqual([{ ...before.cas[0], value: toPem(cert, 'CERTIFICATE') }]);
    const db = svc.service.ctx.database.db;
    const ca = await db.selectFrom('intermediate_cas').selectAll().executeTakeFirstOrThrow();
    const request = await db
      .selectFrom('ca_requests')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirstOrThrow();
    expect(ca.key_ref).toBe(request.key_ref);
    expect(request.completed_at).not.toBeNull();
  });

  it('provisioning API: products, groups, CAs, objects with the plan quota per group', async () => {
    expect((await svc.call('GET', `${F}/el2g-proxy/products`)).json).toEqual([
      { nc12: '935389312472', commercialName: 'SE050C2HQ1/Z01V3' },
      { nc12: '935414457472', commercialName: 'SE051' },
    ]);
    const cas = (await svc.call('GET', `${F}/el2g-proxy/intermediate-cas`)).json.content;
    expect(cas[0]).toMatchObject({ name: 'fio-device-gateway-ca', algorithm: 'NIST_P256' });
    expect((await svc.call('GET', `${F}/el2g-proxy/intermediate-cas/${cas[0].id}`)).json.id).toBe(cas[0].id);
    expect((await svc.call('GET', `${F}/el2g-proxy/intermediate-cas/9999`)).json.code).toBe('not_found');

    const kp = await svc.call('POST', `${F}/el2g-proxy/secure-objects`, {
      body: { name: 'aws-iot-ca-kp', type: 'KEYPAIR', objectId: '0x83000044' },
    });
    expect(kp.status).toBe(201);
    expect(kp.json).toMatchObject({ objectId: '83000044', type: 'KEYPAIR' });
    const again = await svc.call('POST', `${F}/el2g-proxy/secure-objects`, {
      body: { name: 'aws-iot-ca-kp', type: 'KEYPAIR', objectId: '83000044' },
    });
    expect(again.status).toBe(200);
    expect(again.json.id).toBe(kp.json.id);

    // a third key pair would exceed max_keypairs (2) in every group
    const before = await snapshot();
    const third = await svc.call('POST', `${F}/el2g-proxy/secure-objects`, {
      body: { name: 'extra-kp', type: 'KEYPAIR', objectId: '83000050' },
    });
    expect(third.status).toBe(403);
    expect(third.json.code).toBe('object_quota_exceeded');
    expect(third.json.detail).toMatch(
      /device group fio-935389312472 would hold 3 key pairs but the plan allows 2 per device \(max_keypairs\)/,
    );
    expect(third.json.info).toEqual({ group: 'fio-935389312472', limit: 'max_keypairs', usage: 3, max: 2 });
    expect(await snapshot()).toEqual(before);

    // name or object id taken by something else
    const clash = await svc.call('POST', `${F}/el2g-proxy/secure-objects`, {
      body: { name: 'other', type: 'KEYPAIR', objectId: '83000042' },
    });
    expect(clash.json.code).toBe('conflict');
    expect(await snapshot()).toEqual(before);

    // unassign from one group, then assigning back is counted again
    const groups = (await svc.call('GET', `${F}/el2g-proxy/device-groups`)).json.content;
    const prod = groups.find((g: { production: boolean }) => g.production);
    const un = await svc.call(
      'DELETE',
      `${F}/el2g-proxy/secure-objects/${kp.json.id}/device-groups/${prod.id}`,
    );
    expect(un.status).toBe(204);
    const inProd = (await svc.call('GET', `${F}/el2g-proxy/device-groups/${prod.id}/secure-objects`)).json
      .content;
    expect(inProd.map((o: { name: string }) => o.name)).not.toContain('aws-iot-ca-kp');
    const back = await svc.call('POST', `${F}/el2g-proxy/secure-objects/${kp.json.id}/device-groups`, {
      body: { deviceGroupIds: [prod.id] },
    });
    expect(back.json).toEqual({ assigned: 1 });
    // deletion of an object no device has, and of one a CERTIFICATE names
    const gw = (await svc.call('GET', `${F}/el2g-proxy/secure-objects`)).json.content.find(
      (o: { name: string }) => o.name === 'fio-device-gateway-ca-kp',
    );
    const inUse = await svc.call('DELETE', `${F}/el2g-proxy/secure-objects/${gw.id}`);
    expect(inUse.json.code).toBe('conflict');
    expect(inUse.json.detail).toMatch(/is the key pair of fio-device-gateway-ca/);
    expect((await svc.call('DELETE', `${F}/el2g-proxy/secure-objects/${kp.json.id}`)).status).toBe(204);
    expect((await svc.call('GET', `${F}/el2g-proxy/secure-objects/${kp.json.id}`)).json.code).toBe(
      'not_found',
    );
    const actions = (await svc.call('GET', `${F}/audit/?limit=5`)).json.entries.map(
      (e: { action: string }) => e.action,
    );
    expect(actions).toContain('secure-object.delete');
  });

  it('unassigning a KEYPAIR whose CERTIFICATE stays assigned → conflict naming the certificate, nothing changes', async () => {
    const objects = (await svc.call('GET', `${F}/el2g-proxy/secure-objects`)).json.content;
    const kp = objects.find((o: { name: string }) => o.name === 'fio-device-gateway-ca-kp');
    const cert = objects.find((o: { name: string }) => o.name === 'fio-device-gateway-ca');
    const groups = (await svc.call('GET', `${F}/el2g-proxy/device-groups`)).json.content;
    const group = groups.find((g: { name: string }) => g.name === 'fio-935389312472');
    const before = await snapshot();
    const res = await svc.call('DELETE', `${F}/el2g-proxy/secure-objects/${kp.id}/device-groups/${group.id}`);
    expect(res.status).toBe(409);
    expect(res.json.code).toBe('conflict');
    expect(res.json.detail).toBe(
      `secure object fio-device-gateway-ca-kp is the key pair of fio-device-gateway-ca, which stays assigned to device group fio-935389312472; unassign fio-device-gateway-ca (id ${cert.id}) from the group first`,
    );
    expect(await snapshot()).toEqual(before);
    // certificate first, then its key pair: both go; assigned back as they were
    for (const o of [cert, kp]) {
      const un = await svc.call('DELETE', `${F}/el2g-proxy/secure-objects/${o.id}/device-groups/${group.id}`);
      expect(un.status, JSON.stringify(un.json)).toBe(204);
    }
    for (const o of [kp, cert]) {
      const back = await svc.call('POST', `${F}/el2g-proxy/secure-objects/${o.id}/device-groups`, {
        body: { deviceGroupIds: [group.id] },
      });
      expect(back.json).toEqual({ assigned: 1 });
    }
    const pairs = (rows: Array<{ group_id: number; secure_object_id: number }>) =>
      rows.map((r) => [r.group_id, r.secure_object_id]);
    expect(pairs((await snapshot()).assignments)).toEqual(pairs(before.assignments));
  });

  it('a product added later gets the secure objects in its two new groups', async () => {
    const ctx = svc.service.ctx;
    const factory = await findFactoryByName(ctx.database.db, 'demo');
    expect(await addFactoryProduct(ctx.database.db, ctx.config, factory!, '935414457472', new Date())).toBe(
      true,
    );
    const groups = (await svc.call('GET', `${F}/el2g-proxy/device-groups`)).json.content;
    const se051 = groups.filter((g: { nc12: string }) => g.nc12 === '935414457472');
    expect(se051.map((g: { name: string }) => g.name)).toEqual([
      'fio-935414457472',
      'fio-935414457472-production',
    ]);
    for (const g of se051) {
      const objects = (await svc.call('GET', `${F}/el2g-proxy/device-groups/${g.id}/secure-objects`)).json
        .content;
      expect(objects.map((o: { name: string }) => o.name).sort()).toEqual([
        'fio-device-gateway-ca',
        'fio-device-gateway-ca-kp',
      ]);
    }
    expect((await svc.call('GET', `${F}/el2g/overview/`)).json['product-ids']).toEqual([
      935389312472, 935414457472,
    ]);
  });

  it('refuses writes without the write scope and hides other factories', async () => {
    const ctx = svc.service.ctx;
    const other = await createFactory(ctx, 'other', { actor: 'test', correlationId: 'setup' });
    const res = await svc.call('GET', '/ota/factories/other/el2g/overview/');
    expect(res.status).toBe(404);
    expect(res.json.code).toBe('not_found');
    const demoId = (await svc.call('GET', `${F}/el2g-proxy/device-groups`)).json.content[0].id;
    expect(demoId).toBeGreaterThan(0);
    const { token } = await createApiToken(ctx.database.db, {
      factoryId: (
        await ctx.database.db
          .selectFrom('factories')
          .select('id')
          .where('name', '=', 'demo')
          .executeTakeFirstOrThrow()
      ).id,
      scopes: ['read'],
      description: 'ro',
    });
    const before = await snapshot();
    const ro = await svc.call('POST', `${F}/el2g/device-gateway/`, { headers: { 'osf-token': token } });
    expect(ro.status).toBe(403);
    expect(ro.json.code).toBe('forbidden');
    expect(await snapshot()).toEqual(before);
    // the other factory's groups are not reachable by id through this factory
    const otherGroup = await ctx.database.db
      .selectFrom('device_groups')
      .select('id')
      .where('factory_id', '=', other.id)
      .executeTakeFirstOrThrow();
    expect((await svc.call('GET', `${F}/el2g-proxy/device-groups/${otherGroup.id}`)).json.code).toBe(
      'not_found',
    );
  });
});

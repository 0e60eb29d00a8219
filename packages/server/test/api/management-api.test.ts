import { generateKeyPairSync } from 'node:crypto';
import {
  createCsr,
  factoryRootProfile,
  fromPem,
  intermediateCaFromCsr,
  parseCsr,
  softSigner,
  tlsServerFromCsr,
  toPem,
} from '@keyferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFactory } from '../../src/factories/create-factory.ts';
import { createApiToken } from '../../src/tokens/api-tokens.ts';
import { BACKENDS } from '../support/databases.ts';
import { startTestService, type TestService } from '../support/service.ts';

function newSigner() {
  return softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
}

describe.each(BACKENDS)('management API on %s', (backend) => {
  let svc: TestService;
  let otherToken: string;
  let readOnlyToken: string;
  beforeAll(async () => {
    svc = await startTestService(backend);
    const ctx = svc.service.ctx;
    const other = await createFactory(ctx, 'other', { actor: 'test', correlationId: 'setup' });
    otherToken = (
      await createApiToken(ctx.database.db, {
        factoryId: other.id,
        scopes: ['read', 'write'],
        description: 'other',
      })
    ).token;
    const demo = (
      await ctx.database.db
        .selectFrom('factories')
        .select('id')
        .where('name', '=', 'demo')
        .executeTakeFirstOrThrow()
    ).id;
    readOnlyToken = (
      await createApiToken(ctx.database.db, { factoryId: demo, scopes: ['read'], description: 'ro' })
    ).token;
  });
  afterAll(async () => {
    await svc.stop();
  });

  /** Everything a refusal must leave untouched: the PKI and the audit trail. */
  async function snapshot() {
    const certs = await svc.call('GET', '/ota/factories/demo/certs/');
    const audit = await svc.call('GET', '/ota/factories/demo/audit/?limit=500');
    return { certs: certs.json, audit: audit.json.entries.length };
  }

  it('answers health and readiness', async () => {
    expect((await svc.call('GET', '/healthz')).json).toEqual({ status: 'ok' });
    expect((await svc.call('GET', '/readyz')).json).toMatchObject({ status: 'ready', storage: backend });
  });

  it('lists the factory a token sees, by OSF-TOKEN or Bearer, with its repo id', async () => {
    const osf = await svc.call('GET', '/ota/factories/');
    expect(osf.status).toBe(200);
    expect(osf.json).toHaveLength(1);
    expect(osf.json[0]).toMatchObject({ name: 'demo' });
    expect(osf.json[0]['repo-id']).toMatch(/^[a-z0-9]{10}$/);
    const bearer = await svc.call('GET', '/ota/factories/', {
      headers: { 'osf-token': '', authorization: `Bearer ${svc.token}` },
    });
    expect(bearer.json).toEqual(osf.json);
    expect(osf.headers.get('x-correlation-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('refuses a missing or wrong token with 401 problem+json', async () => {
    const none = await svc.call('GET', '/ota/factories/demo/certs/', { headers: { 'osf-token': '' } });
    expect(none.status).toBe(401);
    expect(none.headers.get('content-type')).toContain('application/problem+json');
    expect(none.json).toMatchObject({ code: 'unauthenticated', status: 401 });
    expect(none.json.detail).toContain('OSF-TOKEN');
    const wrong = await svc.call('GET', '/ota/factories/', {
      headers: { 'osf-token': svc.token.slice(0, -2) + 'xx' },
    });
    expect(wrong.status).toBe(401);
    expect(wrong.json.code).toBe('unauthenticated');
  });

  it('answers 404 to a token of another factory, exactly as for a missing factory', async () => {
    const foreign = await svc.call('GET', '/ota/factories/demo/certs/', {
      headers: { 'osf-token': otherToken },
    });
    const missing = await svc.call('GET', '/ota/factories/nope/certs/', {
      headers: { 'osf-token': otherToken },
    });
    expect(foreign.status).toBe(404);
    expect(foreign.json.code).toBe('not_found');
    expect(missing.status).toBe(404);
    const patch = await svc.call('PATCH', '/ota/factories/demo/certs/', {
      headers: { 'osf-token': otherToken },
      body: { 'ca-crt': '' },
    });
    expect(patch.status).toBe(404);
    expect(
      (await svc.call('GET', '/ota/factories/other/certs/', { headers: { 'osf-token': otherToken } })).status,
    ).toBe(206); // its own factory, whose PKI is not set up yet
  });

  it('refuses writes with a read-only token', async () => {
    const before = await snapshot();
    const res = await svc.call('PATCH', '/ota/factories/demo/certs/', {
      headers: { 'osf-token': readOnlyToken },
      body: {},
    });
    expect(res.status).toBe(403);
    expect(res.json.code).toBe('forbidden');
    expect(res.json.detail).toContain('write');
    expect(await snapshot()).toEqual(before);
  });

  it('refuses malformed JSON, unknown fields, wrong media types and oversize bodies; nothing changes', async () => {
    const before = await snapshot();
    const path = '/ota/factories/demo/certs/';
    const bad = await svc.call('PATCH', path, {
      raw: '{"root-crt": ',
      headers: { 'content-type': 'application/json' },
    });
    expect([bad.status, bad.json.code]).toEqual([400, 'invalid_json']);
    const unknown = await svc.call('PATCH', path, { body: { 'root-cert': 'x' } });
    expect([unknown.status, unknown.json.code]).toEqual([400, 'unknown_field']);
    expect(unknown.json.detail).toContain('"root-cert"');
    const media = await svc.call('PATCH', path, {
      raw: 'root-crt=x',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect([media.status, media.json.code]).toEqual([415, 'unsupported_media_type']);
    const huge = await svc.call('PATCH', path, {
      raw: JSON.stringify({ 'ca-crt': 'A'.repeat(9 * 1024 * 1024) }),
      headers: { 'content-type': 'application/json' },
    });
    expect([huge.status, huge.json.code]).toEqual([413, 'body_too_large']);
    const notPem = await svc.call('PATCH', path, { body: { 'root-crt': 'hello' } });
    expect([notPem.status, notPem.json.code]).toEqual([400, 'certificate_invalid']);
    expect(await snapshot()).toEqual(before);
  });

  it('hands out the gateway TLS CSR for <repoid>.ota-lite.<domain> and accepts a matching PKI once', async () => {
    const certs = await svc.call('GET', '/ota/factories/demo/certs/');
    expect(certs.json['root-crt']).toBe('');
    const csr = parseCsr(fromPem(certs.json['tls-csr'], 'CERTIFICATE REQUEST'));
    const repoId = (await svc.call('GET', '/ota/factories/')).json[0]['repo-id'];
    expect(csr.dnsNames).toEqual([`${repoId}.ota-lite.localhost`]);

    const rootSigner = newSigner();
    const root = await factoryRootProfile({ factory: 'demo', signer: rootSigner });
    const tls = await tlsServerFromCsr({ csr, issuerCert: root, signer: rootSigner, dnsNames: csr.dnsNames });

    // refusals first: each leaves the PKI as it was
    const before = await snapshot();
    const strangerSigner = newSigner();
    const strangerRoot = await factoryRootProfile({ factory: 'demo', signer: strangerSigner });
    const otherKeyCsr = parseCsr(
      await createCsr({ subject: { CN: 'x' }, dnsNames: ['x'], signer: newSigner() }),
    );
    const wrongKey = await tlsServerFromCsr({
      csr: otherKeyCsr,
      issuerCert: root,
      signer: rootSigner,
      dnsNames: ['x'],
    });
    const mismatch = await svc.call('PATCH', '/ota/factories/demo/certs/', {
      body: { 'root-crt': toPem(root, 'CERTIFICATE'), 'tls-crt': toPem(wrongKey, 'CERTIFICATE') },
    });
    expect([mismatch.status, mismatch.json.code]).toEqual([400, 'certificate_mismatch']);
    const foreignChain = await svc.call('PATCH', '/ota/factories/demo/certs/', {
      body: { 'root-crt': toPem(strangerRoot, 'CERTIFICATE'), 'tls-crt': toPem(tls, 'CERTIFICATE') },
    });
    expect([foreignChain.status, foreignChain.json.code]).toEqual([400, 'untrusted_chain']);
    const leafAsRoot = await svc.call('PATCH', '/ota/factories/demo/certs/', {
      body: { 'root-crt': toPem(tls, 'CERTIFICATE') },
    });
    expect([leafAsRoot.status, leafAsRoot.json.code]).toEqual([400, 'certificate_invalid']);
    const noRoot = await svc.call('PATCH', '/ota/factories/demo/certs/', {
      body: { 'tls-crt': toPem(tls, 'CERTIFICATE') },
    });
    expect([noRoot.status, noRoot.json.code]).toEqual([409, 'pki_missing']);
    expect(await snapshot()).toEqual(before);

    const ok = await svc.call('PATCH', '/ota/factories/demo/certs/', {
      body: { 'root-crt': toPem(root, 'CERTIFICATE'), 'tls-crt': toPem(tls, 'CERTIFICATE') },
    });
    expect(ok.status).toBe(200);
    expect(ok.json['root-crt']).toBe(toPem(root, 'CERTIFICATE'));
    expect(ok.json['change-meta']['updated-by']).toMatch(/^token:[0-9a-f]{16}$/);

    const replace = await svc.call('PATCH', '/ota/factories/demo/certs/', {
      body: { 'root-crt': toPem(strangerRoot, 'CERTIFICATE') },
    });
    expect([replace.status, replace.json.code]).toEqual([409, 'pki_exists']);

    // ca-crt entries must be CAs under the root
    const caCsr = parseCsr(await createCsr({ subject: { CN: 'device-ca' }, signer: newSigner() }));
    const deviceCa = await intermediateCaFromCsr({ csr: caCsr, issuerCert: root, signer: rootSigner });
    const strangerCa = await intermediateCaFromCsr({
      csr: caCsr,
      issuerCert: strangerRoot,
      signer: strangerSigner,
    });
    const badCa = await svc.call('PATCH', '/ota/factories/demo/certs/', {
      body: { 'ca-crt': toPem(strangerCa, 'CERTIFICATE') },
    });
    expect([badCa.status, badCa.json.code]).toEqual([400, 'untrusted_chain']);
    const goodCa = await svc.call('PATCH', '/ota/factories/demo/certs/', {
      body: { 'ca-crt': toPem(deviceCa, 'CERTIFICATE') },
    });
    expect(goodCa.status).toBe(200);
    expect(goodCa.json['ca-crt']).toBe(toPem(deviceCa, 'CERTIFICATE'));

    const audit = await svc.call('GET', '/ota/factories/demo/audit/');
    expect(audit.json.entries.filter((e: { action: string }) => e.action === 'pki.update')).toHaveLength(2);
    expect(audit.json.entries[0].correlationId).toBe(goodCa.headers.get('x-correlation-id'));
  });
});

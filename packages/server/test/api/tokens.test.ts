import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFactory } from '../../src/factories/create-factory.ts';
import { BACKENDS } from '../support/databases.ts';
import { startTestService, type TestService } from '../support/service.ts';

describe.each(BACKENDS)('tokens/ API on %s: create, list, expire, revoke', (backend) => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService(backend);
  });
  afterAll(async () => {
    await svc.stop();
  });

  const asToken = (token: string, path = '/ota/factories/demo/el2g/overview/') =>
    svc.call('GET', path, { headers: { 'osf-token': token } });
  const tokenRows = async () => (await svc.call('GET', '/ota/factories/demo/tokens/')).json;
  const auditCount = async () =>
    (await svc.call('GET', '/ota/factories/demo/audit/?limit=500')).json.entries.length as number;

  it('creates a read token whose secret is answered once and never listed', async () => {
    const created = await svc.call('POST', '/ota/factories/demo/tokens/', {
      body: { description: 'line 3 monitor', scopes: ['read'] },
    });
    expect(created.status).toBe(201);
    expect(created.json.token).toMatch(/^kf_[0-9a-f]{16}_/);
    expect(created.json).toMatchObject({ scopes: ['read'], 'expires-at': null, 'revoked-at': null });
    expect((await asToken(created.json.token)).status).toBe(200);
    // read scope cannot change anything
    const write = await svc.call('POST', '/ota/factories/demo/tokens/', {
      body: { description: 'x', scopes: ['read'] },
      headers: { 'osf-token': created.json.token },
    });
    expect(write.status).toBe(403);
    expect(write.json.code).toBe('forbidden');
    const listed = await tokenRows();
    const row = listed.find((t: { id: string }) => t.id === created.json.id);
    expect(row).toMatchObject({ description: 'line 3 monitor', scopes: ['read'] });
    expect(JSON.stringify(listed)).not.toContain(created.json.token.slice('kf_0123456789abcdef_'.length));
    expect(listed.every((t: object) => !('token' in t))).toBe(true);
    const audit = (await svc.call('GET', '/ota/factories/demo/audit/?limit=5')).json.entries;
    expect(audit[0]).toMatchObject({ action: 'token.create', object: `token:${created.json.id}` });
    expect(JSON.stringify(audit)).not.toContain(created.json.token);
  });

  it('refuses a write-only token and a JSON body sent as text/plain, creating nothing', async () => {
    const before = await tokenRows();
    const audits = await auditCount();
    const writeOnly = await svc.call('POST', '/ota/factories/demo/tokens/', {
      body: { description: 'w', scopes: ['write'] },
    });
    expect([writeOnly.status, writeOnly.json.code]).toEqual([400, 'invalid_request']);
    expect(writeOnly.json.detail).toContain('scope write needs read too: send ["read", "write"]');
    const asText = await fetch(`${svc.url}/ota/factories/demo/tokens/`, {
      method: 'POST',
      headers: { 'osf-token': svc.token, 'content-type': 'text/plain' },
      body: JSON.stringify({ description: 'as text', scopes: ['read'] }),
    });
    expect(asText.status).toBe(415);
    expect(((await asText.json()) as { code: string }).code).toBe('unsupported_media_type');
    expect(await tokenRows()).toEqual(before);
    expect(await auditCount()).toBe(audits);
  });

  it('refuses a token after its expiry time, saying it expired', async () => {
    const expiresAt = new Date(Date.now() + 3600_000).toISOString();
    const created = await svc.call('POST', '/ota/factories/demo/tokens/', {
      body: { description: 'short', scopes: ['read'], 'expires-at': expiresAt },
    });
    expect(created.status).toBe(201);
    expect(created.json['expires-at']).toBe(expiresAt);
    expect((await asToken(created.json.token)).status).toBe(200);
    // the hour passes (moving the stored expiry keeps the test free of wall-clock waits)
    const past = new Date(Date.now() - 1000).toISOString();
    await svc.service.ctx.database.db
      .updateTable('api_tokens')
      .set({ expires_at: past })
      .where('id', '=', created.json.id)
      .execute();
    const refused = await asToken(created.json.token);
    expect(refused.status).toBe(401);
    expect(refused.json.code).toBe('unauthenticated');
    expect(refused.json.detail).toContain(`expired at ${past}`);
  });

  it('refuses a revoked token from the next request on', async () => {
    const created = await svc.call('POST', '/ota/factories/demo/tokens/', {
      body: { description: 'to revoke', scopes: ['read', 'write'] },
    });
    expect((await asToken(created.json.token)).status).toBe(200);
    const revoked = await svc.call('DELETE', `/ota/factories/demo/tokens/${created.json.id}`);
    expect(revoked.status).toBe(200);
    expect(revoked.json['revoked-at']).toEqual(expect.any(String));
    const refused = await asToken(created.json.token);
    expect(refused.status).toBe(401);
    expect(refused.json.detail).toContain('was revoked');
    // revoking again keeps the first time
    const again = await svc.call('DELETE', `/ota/factories/demo/tokens/${created.json.id}`);
    expect(again.json['revoked-at']).toBe(revoked.json['revoked-at']);
  });

  it.each([
    [{ description: 'x', scopes: ['admin'] }, 'invalid_request', 'unknown scope "admin"'],
    [{ description: 'x', scopes: [] }, 'invalid_request', 'at least one scope'],
    [{ description: '', scopes: ['read'] }, 'invalid_request', 'description'],
    [
      { description: 'x', scopes: ['read'], 'expires-at': '2001-01-01T00:00:00Z' },
      'invalid_request',
      'not in the future',
    ],
    [{ description: 'x', scopes: ['read'], 'expires-at': 'tomorrow' }, 'invalid_request', 'an ISO 8601 time'],
    // new Date() took these: 02-30 as 03-02, a bare year as its first second
    [
      { description: 'x', scopes: ['read'], 'expires-at': '2031-02-30T00:00:00Z' },
      'invalid_request',
      'a date that exists',
    ],
    [{ description: 'x', scopes: ['read'], 'expires-at': '2031' }, 'invalid_request', 'an ISO 8601 time'],
    [{ description: 'x', scopes: ['read'], secret: 'mine' }, 'unknown_field', '"secret"'],
  ])('refuses %j and changes nothing', async (body, code, detail) => {
    const before = { tokens: await tokenRows(), audit: await auditCount() };
    const res = await svc.call('POST', '/ota/factories/demo/tokens/', { body });
    expect(res.status).toBe(400);
    expect(res.json.code).toBe(code);
    expect(res.json.detail).toContain(detail);
    expect({ tokens: await tokenRows(), audit: await auditCount() }).toEqual(before);
  });

  it("cannot see or revoke another factory's token", async () => {
    const ctx = svc.service.ctx;
    const other = await createFactory(ctx, `other-${backend}`, { actor: 'test', correlationId: 'setup' });
    const { issueFactoryToken } = await import('../../src/tokens/api-tokens.ts');
    const theirs = await issueFactoryToken(
      ctx.database,
      { factoryId: other.id, scopes: ['read'], description: 'theirs' },
      { actor: 'test', correlationId: 'setup' },
    );
    expect((await tokenRows()).some((t: { id: string }) => t.id === theirs.info.id)).toBe(false);
    const res = await svc.call('DELETE', `/ota/factories/demo/tokens/${theirs.info.id}`);
    expect(res.status).toBe(404);
    expect(res.json.code).toBe('not_found');
    expect((await asToken(theirs.token, `/ota/factories/${other.name}/tokens/`)).status).toBe(200);
  });
});

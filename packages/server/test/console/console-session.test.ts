import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiToken } from '../../src/tokens/api-tokens.ts';
import { startTestService, type TestService } from '../support/service.ts';

/** Every log line keyferryd writes, at debug level, to search for secrets. */
const lines: string[] = [];
const sink = new Writable({
  write(chunk, _encoding, done) {
    lines.push(String(chunk));
    done();
  },
});

describe('console sessions', () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService('sqlite', {}, { log: pino({ level: 'debug' }, sink) });
  });
  afterAll(async () => {
    await svc?.stop();
  });

  const signIn = (token: string) =>
    fetch(`${svc.url}/console/sign-in`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: svc.url },
      body: new URLSearchParams({ token }).toString(),
    });

  it('writes nothing of the token or the session cookie to the log', async () => {
    const wrong = await signIn(`${svc.token.slice(0, -6)}ZZZZZZ`);
    expect(wrong.status).toBe(401);
    const ok = await signIn(svc.token);
    expect(ok.status).toBe(303);
    const cookie = ok.headers.get('set-cookie')!.split(';')[0]!;
    for (const path of ['/console/', '/console/devices?q=0x12', '/console/import']) {
      await (await fetch(svc.url + path, { headers: { cookie, accept: 'text/html' } })).text();
    }
    const secret = svc.token.slice('kf_0123456789abcdef_'.length);
    const log = lines.join('');
    expect(log).toContain('/console/sign-in');
    expect(log).not.toContain(secret.slice(0, 12));
    expect(log).not.toContain(secret.slice(-12, -6));
    expect(log).not.toContain(cookie.split('=')[1]!.slice(0, 12));
  });

  it('refuses a sign-in posted from another site and sets no cookie', async () => {
    const res = await fetch(`${svc.url}/console/sign-in`, {
      method: 'POST',
      redirect: 'manual',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        origin: 'http://evil.example',
        accept: 'text/html',
      },
      body: new URLSearchParams({ token: svc.token }).toString(),
    });
    expect(res.status).toBe(403);
    expect(res.headers.get('set-cookie')).toBeNull();
    expect(await res.text()).toContain('this request came from another site');
  });

  it('refuses a token without the read scope at sign-in', async () => {
    const db = svc.service.ctx.database.db;
    const factory = await db
      .selectFrom('factories')
      .select('id')
      .where('name', '=', 'demo')
      .executeTakeFirstOrThrow();
    const { token } = await createApiToken(db, {
      factoryId: factory.id,
      scopes: ['write'],
      description: 'write only',
    });
    const res = await signIn(token);
    expect(res.status).toBe(403);
    expect(res.headers.get('set-cookie')).toBeNull();
    expect(await res.text()).toContain('lacks the &quot;read&quot; scope the console needs');
  });

  it('refuses an import of an unknown product or an empty file, and adds nothing', async () => {
    const ok = await signIn(svc.token);
    const cookie = ok.headers.get('set-cookie')!.split(';')[0]!;
    const page = await (await fetch(`${svc.url}/console/import`, { headers: { cookie } })).text();
    const csrf = /name="csrf-token" content="([^"]+)"/.exec(page)![1]!;
    const upload = (product: string, body: string, fileName = 'ids.txt') =>
      fetch(`${svc.url}/console/import?product=${product}`, {
        method: 'POST',
        headers: {
          cookie,
          'x-csrf-token': csrf,
          'content-type': 'application/octet-stream',
          'x-file-name': fileName,
        },
        body,
      });
    const before = (await svc.call('GET', '/ota/factories/demo/el2g/plan/')).json.devices.used;
    const unknown = await upload('000000000000', `0x${'04'.padEnd(36, '1')}\n`);
    expect(unknown.status).toBe(400);
    expect(await unknown.json()).toMatchObject({
      code: 'unknown_product',
      detail: expect.stringContaining('not in the catalogue'),
    });
    const empty = await upload('935389312472', '\n \n');
    expect(empty.status).toBe(400);
    expect(((await empty.json()) as { detail: string }).detail).toContain(
      'ids.txt is empty: put one device id a line',
    );
    // a file name that is not percent-encoded UTF-8 is named as it came (it was a 500)
    const badName = await upload('935389312472', '\n', 'ids%E0.txt');
    expect(badName.status).toBe(400);
    expect(((await badName.json()) as { detail: string }).detail).toContain('ids%E0.txt is empty');
    expect((await svc.call('GET', '/ota/factories/demo/el2g/plan/')).json.devices.used).toBe(before);
  });

  it('ends the session when its token is revoked', async () => {
    const ok = await signIn(svc.token);
    const cookie = ok.headers.get('set-cookie')!.split(';')[0]!;
    const db = svc.service.ctx.database.db;
    const tokenId = svc.token.split('_')[1]!;
    await db
      .updateTable('api_tokens')
      .set({ revoked_at: new Date().toISOString() })
      .where('id', '=', tokenId)
      .execute();
    const res = await fetch(`${svc.url}/console/`, {
      redirect: 'manual',
      headers: { cookie, accept: 'text/html' },
    });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/console/sign-in');
    expect(res.headers.get('set-cookie')).toContain('Max-Age=0');
  });
});

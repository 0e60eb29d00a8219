import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { MAX_ID_FILE_BYTES } from '@keyferry/core';
import { randomUid } from '@keyferry/sim';
import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_JOB_DEVICES } from '../../src/allowlist/bulk-jobs.ts';
import {
  ConsoleSessions,
  MAX_SESSIONS,
  MAX_SESSIONS_PER_FACTORY,
  MAX_SESSIONS_PER_TOKEN,
} from '../../src/http/console/sessions.ts';
import { createApiToken } from '../../src/tokens/api-tokens.ts';
import { startTestService, type TestService } from '../support/service.ts';

const SE050 = '935389312472';

/**
 * Reads a console event stream until keyferryd ends it: true when it ended, false when it was
 * still open after `patienceMs` (generous: a push comes every 2 s).
 */
async function streamEnds(body: ReadableStream<Uint8Array>, patienceMs = 30_000): Promise<boolean> {
  const reader = body.getReader();
  let gaveUp = false;
  const timer = setTimeout(() => {
    gaveUp = true;
    void reader.cancel();
  }, patienceMs);
  try {
    for (;;) {
      const { done } = await reader.read();
      if (done) return !gaveUp;
    }
  } catch {
    return !gaveUp;
  } finally {
    clearTimeout(timer);
  }
}

/** Reads the stream's first event (the one sent at once). */
async function firstEvent(body: ReadableStream<Uint8Array>): Promise<string> {
  const reader = body.getReader();
  let text = '';
  while (!text.includes('\n\n')) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  return text;
}

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

  const demoFactoryId = async () =>
    (
      await svc.service.ctx.database.db
        .selectFrom('factories')
        .select('id')
        .where('name', '=', 'demo')
        .executeTakeFirstOrThrow()
    ).id;
  const newToken = async (scopes: Array<'read' | 'write'> = ['read', 'write'], expiresAt?: Date) =>
    createApiToken(svc.service.ctx.database.db, {
      factoryId: await demoFactoryId(),
      scopes,
      description: 'console session test',
      ...(expiresAt ? { expiresAt } : {}),
    });
  /** A signed-in session: its cookie and the CSRF token of its pages. */
  const session = async (token: string) => {
    const ok = await signIn(token);
    expect(ok.status).toBe(303);
    const cookie = ok.headers.get('set-cookie')!.split(';')[0]!;
    const page = await (await fetch(`${svc.url}/console/import`, { headers: { cookie } })).text();
    const csrf = /name="csrf-token" content="([^"]+)"/.exec(page)![1]!;
    return { cookie, csrf };
  };
  const used = async () => (await svc.call('GET', '/ota/factories/demo/el2g/plan/')).json.devices.used;
  const jobCount = async () =>
    (
      await svc.service.ctx.database.db
        .selectFrom('bulk_jobs')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .executeTakeFirstOrThrow()
    ).n;

  it('answers a page that failed inside keyferryd with an error page, not JSON, and logs the cause', async () => {
    const { cookie } = await session(svc.token);
    const db = svc.service.ctx.database.db;
    // the devices page's query cannot run while its table has another name
    await sql`ALTER TABLE devices RENAME TO devices_away`.execute(db);
    let res: Response;
    let body: string;
    try {
      res = await fetch(`${svc.url}/console/devices`, { headers: { cookie, accept: 'text/html' } });
      body = await res.text();
    } finally {
      await sql`ALTER TABLE devices_away RENAME TO devices`.execute(db);
    }
    expect(res.status).toBe(500);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(res.headers.get('content-security-policy')).toContain("default-src 'none'");
    const id = /quote correlation id (\S+) to whoever runs keyferryd, whose log has the cause/.exec(
      body,
    )?.[1];
    expect(id, body).toBeDefined();
    expect(body).toContain('Internal error');
    expect(body).not.toMatch(/no such table|devices_away|SqliteError/);
    // the cause is in the log, under the same correlation id
    const failed = lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'request failed' && l.reqId === id);
    expect(failed?.err?.message).toMatch(/no such table: devices/);
    expect(
      (await fetch(`${svc.url}/console/devices`, { headers: { cookie, accept: 'text/html' } })).status,
    ).toBe(200);
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

  it('ends a live stream when its session signs out, though the browser keeps it open', async () => {
    const { token } = await newToken(['read']);
    const { cookie, csrf } = await session(token);
    const events = await fetch(`${svc.url}/console/events`, { headers: { cookie } });
    expect(events.status).toBe(200);
    expect(await firstEvent(events.body!)).toContain('event: live');
    const out = await fetch(`${svc.url}/console/sign-out`, {
      method: 'POST',
      redirect: 'manual',
      headers: {
        cookie,
        origin: svc.url,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ csrf }).toString(),
    });
    expect(out.status).toBe(303);
    expect(await streamEnds(events.body!)).toBe(true);
    // and the stream cannot be opened again with the old cookie
    expect((await fetch(`${svc.url}/console/events`, { headers: { cookie } })).status).toBe(401);
    // signing out again (another tab's button) goes to the sign-in page, not to an error page
    const again = await fetch(`${svc.url}/console/sign-out`, {
      method: 'POST',
      redirect: 'manual',
      headers: {
        cookie,
        origin: svc.url,
        accept: 'text/html',
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ csrf }).toString(),
    });
    expect(again.status).toBe(303);
    expect(again.headers.get('location')).toBe('/console/sign-in');
  }, 60_000);

  it('ends a live stream at the next push once its token is revoked', async () => {
    const { id, token } = await newToken(['read']);
    const { cookie } = await session(token);
    const events = await fetch(`${svc.url}/console/events`, { headers: { cookie } });
    expect(await firstEvent(events.body!)).toContain('event: live');
    const revoked = await svc.call('DELETE', `/ota/factories/demo/tokens/${id}`);
    expect(revoked.status).toBe(200);
    expect(await streamEnds(events.body!)).toBe(true);
  }, 60_000);

  it('tells a revoked or expired token so at sign-in, and an unknown or wrong one nothing more', async () => {
    const revoked = await newToken(['read']);
    expect((await svc.call('DELETE', `/ota/factories/demo/tokens/${revoked.id}`)).status).toBe(200);
    const expired = await newToken(['read'], new Date(Date.now() + 3_600_000));
    await svc.service.ctx.database.db
      .updateTable('api_tokens')
      .set({ expires_at: new Date(Date.now() - 60_000).toISOString() })
      .where('id', '=', expired.id)
      .execute();
    const answer = async (token: string) => {
      const res = await signIn(token);
      expect(res.headers.get('set-cookie')).toBeNull();
      return { status: res.status, text: await res.text() };
    };
    const r = await answer(revoked.token);
    expect(r.status).toBe(401);
    expect(r.text).toContain(`the API token ${revoked.id} was revoked at`);
    expect(r.text).toContain('use another token');
    const e = await answer(expired.token);
    expect(e.status).toBe(401);
    expect(e.text).toContain(`the API token ${expired.id} expired at`);
    expect(e.text).toContain('create a new one');
    // the revoked token's id with a wrong secret, and an id that does not exist: no hint
    for (const wrong of [`${revoked.token.slice(0, -4)}AAAA`, 'kf_0123456789abcdef_' + 'A'.repeat(43)]) {
      const w = await answer(wrong);
      expect(w.status).toBe(401);
      expect(w.text).toContain('the API token is not valid: check it, or create a new one');
      expect(w.text).not.toContain('revoked');
      expect(w.text).not.toContain(revoked.id);
    }
  });

  it('refuses an import over the file limit naming the limit, and adds nothing', async () => {
    const { token } = await newToken();
    const { cookie, csrf } = await session(token);
    const before = await used();
    const res = await fetch(`${svc.url}/console/import?product=${SE050}`, {
      method: 'POST',
      headers: {
        cookie,
        'x-csrf-token': csrf,
        'content-type': 'application/octet-stream',
        'x-file-name': 'huge.csv',
      },
      body: new Uint8Array(MAX_ID_FILE_BYTES + 1).fill(0x30),
    });
    expect(res.status).toBe(413);
    const body = (await res.json()) as { code: string; detail: string };
    expect(body.code).toBe('body_too_large');
    expect(body.detail).toContain(`huge.csv is larger than ${MAX_ID_FILE_BYTES} bytes`);
    expect(body.detail).toContain('split it');
    expect(await used()).toBe(before);
  }, 60_000);

  it('refuses an import sent as text/csv or without a Content-Type naming application/octet-stream', async () => {
    const { token } = await newToken();
    const { cookie, csrf } = await session(token);
    const before = await used();
    const jobs = await jobCount();
    const file = new TextEncoder().encode(`0x${randomUid().hex}\n`);
    for (const type of ['text/csv', undefined]) {
      const res = await fetch(`${svc.url}/console/import?product=${SE050}`, {
        method: 'POST',
        headers: { cookie, 'x-csrf-token': csrf, ...(type ? { 'content-type': type } : {}) },
        body: file, // bytes: fetch adds no Content-Type of its own
      });
      expect(res.status, String(type)).toBe(415);
      const body = (await res.json()) as { code: string; detail: string };
      expect(body.code).toBe('unsupported_media_type');
      expect(body.detail).toContain(type ? `Content-Type ${type}` : 'no Content-Type');
      expect(body.detail).toContain('send it as application/octet-stream');
      expect(body.detail).not.toContain('application/json');
    }
    expect(await used()).toBe(before);
    expect(await jobCount()).toBe(jobs);
  });

  it(`refuses a file of more than ${MAX_JOB_DEVICES} ids naming the file, the limit and the CLI`, async () => {
    const { token } = await newToken();
    const { cookie, csrf } = await session(token);
    const before = await used();
    const jobs = await jobCount();
    const ids = Array.from({ length: MAX_JOB_DEVICES + 1 }, () => `0x${randomUid().hex}`);
    const res = await fetch(`${svc.url}/console/import?product=${SE050}`, {
      method: 'POST',
      headers: {
        cookie,
        'x-csrf-token': csrf,
        'content-type': 'application/octet-stream',
        'x-file-name': 'line-7.txt',
      },
      body: `${ids.join('\n')}\n`,
    });
    expect(res.status).toBe(400);
    const { detail } = (await res.json()) as { detail: string };
    expect(detail).toContain(`line-7.txt has ${MAX_JOB_DEVICES + 1} device ids`);
    expect(detail).toContain(`at most ${MAX_JOB_DEVICES}`);
    expect(detail).toContain(`keyferry el2g devices add ${SE050} --file line-7.txt`);
    expect(await used()).toBe(before);
    expect(await jobCount()).toBe(jobs);
  }, 60_000);

  it('accepts Sec-Fetch-Site: same-origin behind a TLS proxy it does not trust, and still refuses other sites', async () => {
    const { token } = await newToken(['read']);
    const httpsOrigin = svc.url.replace('http:', 'https:');
    const post = (headers: Record<string, string>) =>
      fetch(`${svc.url}/console/sign-in`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: new URLSearchParams({ token }).toString(),
      });
    // what a browser sends through the proxy: the https origin it sees, and same-origin
    const ok = await post({ origin: httpsOrigin, 'sec-fetch-site': 'same-origin' });
    expect(ok.status).toBe(303);
    expect(ok.headers.get('set-cookie')).toContain('kf_console=');
    for (const site of ['cross-site', 'same-site']) {
      const refused = await post({ origin: svc.url, 'sec-fetch-site': site });
      expect(refused.status, site).toBe(403);
      expect(refused.headers.get('set-cookie')).toBeNull();
    }
    // an old browser (no Sec-Fetch-Site) is still held to Origin
    const old = await post({ origin: httpsOrigin });
    expect(old.status).toBe(403);
  });

  it('reads the devices cursor only as decimal digits, refusing 0x10, 1e1 and the like with a page', async () => {
    const { token } = await newToken(['read']);
    const { cookie } = await session(token);
    const devices = (after: string) =>
      fetch(`${svc.url}/console/devices?after=${after}`, { headers: { cookie, accept: 'text/html' } });
    expect((await devices('16')).status).toBe(200);
    for (const after of ['0x10', '1e1', '%2016', '16.0', '-1', '']) {
      const res = await devices(after);
      expect(res.status, after).toBe(400);
      expect(res.headers.get('content-type'), after).toContain('text/html');
      const text = await res.text();
      expect(text, after).toContain('field &quot;after&quot;');
      expect(text, after).toContain('is not a decimal whole number: write it in the digits 0-9 only');
      expect(text, after).toContain('href="/console/"');
    }
  });

  it("answers a refusal as the route answers, whatever Accept says: a page's as a page, an import's as JSON", async () => {
    const { token } = await newToken(['read']);
    const { cookie } = await session(token);
    const get = (path: string, accept?: string) =>
      fetch(svc.url + path, { headers: { cookie, ...(accept ? { accept } : {}) } });
    // the devices page: a q too long for the form and a q that is no device id alike
    for (const accept of [undefined, 'application/json', 'text/html']) {
      for (const q of ['x'.repeat(101), '0x12']) {
        const res = await get(`/console/devices?q=${q}`, accept);
        expect(res.status, `${accept} ${q}`).toBe(400);
        expect(res.headers.get('content-type'), `${accept} ${q}`).toContain('text/html');
        expect(res.headers.get('content-security-policy')).toContain("default-src 'none'");
        expect(await res.text()).toContain('class="error" role="alert"');
      }
    }
    // an import's summary is JSON, its refusals too, even to a browser
    for (const accept of [undefined, 'text/html']) {
      const unknown = await get(`/console/import/${randomUUID()}`, accept);
      expect(unknown.status, accept).toBe(404);
      expect(unknown.headers.get('content-type'), accept).toContain('application/problem+json');
      expect(((await unknown.json()) as { detail: string }).detail).toContain(
        "is not one of this session's imports",
      );
      const malformed = await get('/console/import/not-a-uuid', accept);
      expect(malformed.status, accept).toBe(400);
      expect(((await malformed.json()) as { detail: string }).detail).toContain('an import id is a UUID');
    }
  });

  it('answers a mistyped console address with a 404 page to a browser, and problem+json to anything else', async () => {
    const { token } = await newToken(['read']);
    const { cookie } = await session(token);
    for (const headers of [{ cookie }, {}]) {
      const signedIn = 'cookie' in headers;
      const page = await fetch(`${svc.url}/console/devcies?q=1`, {
        redirect: 'manual',
        headers: { ...headers, accept: 'text/html,application/xhtml+xml,*/*;q=0.8' },
      });
      expect(page.status, `signed in: ${signedIn}`).toBe(404);
      expect(page.headers.get('content-type')).toContain('text/html');
      expect(page.headers.get('content-security-policy')).toContain("default-src 'none'");
      expect(page.headers.get('x-content-type-options')).toBe('nosniff');
      expect(page.headers.get('cache-control')).toBe('no-store');
      const text = await page.text();
      expect(text).toContain('<link rel="stylesheet" href="/console/assets/console.css">');
      expect(text).toContain('there is no console page at /console/devcies: check the address');
      expect(text).toContain('<a href="/console/">');
      const json = await fetch(`${svc.url}/console/devcies`, {
        headers: { ...headers, accept: 'application/json' },
      });
      expect(json.status).toBe(404);
      expect(json.headers.get('content-type')).toContain('application/problem+json');
      expect(json.headers.get('content-security-policy')).toContain("default-src 'none'");
      expect(await json.json()).toMatchObject({
        code: 'not_found',
        detail: expect.stringContaining('there is no console page at /console/devcies'),
      });
    }
    // a console address with another method is no console page either
    const del = await fetch(`${svc.url}/console/devices`, {
      method: 'DELETE',
      headers: { cookie, accept: 'text/html' },
    });
    expect(del.status).toBe(404);
    expect(del.headers.get('content-type')).toContain('text/html');
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

describe('console sessions behind a trusted proxy, with small sign-in limits', () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService('sqlite', {
      api: {
        listen: '127.0.0.1:0',
        trustProxy: true,
        rateLimits: {
          signInPerAddress: { burst: 5, perMinute: 1 },
          signInPerToken: { burst: 2, perMinute: 1 },
        },
      },
    });
  });
  afterAll(async () => {
    await svc?.stop();
  });

  /** A sign-in through the proxy: the client's address, https and the public host in X-Forwarded-*. */
  const signIn = (token: string, client: string) =>
    fetch(`${svc.url}/console/sign-in`, {
      method: 'POST',
      redirect: 'manual',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        'x-forwarded-for': client,
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'console.example',
        origin: 'https://console.example',
      },
      body: new URLSearchParams({ token }).toString(),
    });

  it('takes https and the host from X-Forwarded-*: the origin matches and the cookie is Secure', async () => {
    const res = await signIn(svc.token, '192.0.2.1');
    expect(res.status).toBe(303);
    expect(res.headers.get('set-cookie')).toMatch(/; Secure$/);
    const cookie = res.headers.get('set-cookie')!.split(';')[0]!;
    const page = await fetch(`${svc.url}/console/`, { redirect: 'manual', headers: { cookie } });
    expect(page.status).toBe(200);
  });

  it('limits sign-ins per client address, wrong tokens included, and per token once its secret matched', async () => {
    const client = '192.0.2.2';
    const db = svc.service.ctx.database.db;
    const factoryId = (
      await db.selectFrom('factories').select('id').where('name', '=', 'demo').executeTakeFirstOrThrow()
    ).id;
    const { token } = await createApiToken(db, { factoryId, scopes: ['read'], description: 'limits' });
    expect((await signIn(token, client)).status).toBe(303);
    expect((await signIn(token, client)).status).toBe(303);
    const perToken = await signIn(token, client);
    expect(perToken.status).toBe(429);
    expect(perToken.headers.get('set-cookie')).toBeNull();
    expect(Number(perToken.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await perToken.text()).toContain('over api.rateLimits.signInPerToken (2 at once, 1 a minute)');
    // two more (wrong) tries fill the address's burst of 5, though they put made-up addresses
    // before the one the proxy saw; the next is refused before any lookup
    for (let i = 0; i < 2; i++) {
      expect((await signIn(`${token.slice(0, -4)}AAAA`, `10.9.9.${i}, ${client}`)).status).toBe(401);
    }
    const perAddress = await signIn(svc.token, client);
    expect(perAddress.status).toBe(429);
    expect(perAddress.headers.get('set-cookie')).toBeNull();
    expect(await perAddress.text()).toContain('over api.rateLimits.signInPerAddress (5 at once, 1 a minute)');
    // another address is not held back
    expect((await signIn(svc.token, '192.0.2.3')).status).toBe(303);
  });
});

describe('console sessions in memory', () => {
  it(`keeps at most ${MAX_SESSIONS_PER_TOKEN} sessions a token, ending that token's oldest`, () => {
    const sessions = new ConsoleSessions();
    const ended: string[] = [];
    sessions.onEnd((id) => ended.push(id));
    const other = sessions.create({ tokenId: 'other', factoryId: 1 });
    const mine = Array.from({ length: MAX_SESSIONS_PER_TOKEN }, () =>
      sessions.create({ tokenId: 'mine', factoryId: 1 }),
    );
    expect(ended).toEqual([]);
    sessions.create({ tokenId: 'mine', factoryId: 1 });
    expect(ended).toEqual([mine[0]!.id]);
    expect(sessions.find(mine[0]!.id)).toBeUndefined();
    expect(sessions.find(mine[1]!.id)).toBe(mine[1]!.session);
    expect(sessions.find(other.id)).toBe(other.session);
  });

  it(`keeps at most ${MAX_SESSIONS_PER_FACTORY} sessions a factory, ending its oldest: other factories still sign in`, () => {
    const sessions = new ConsoleSessions();
    const ended: string[] = [];
    sessions.onEnd((id) => ended.push(id));
    const theirs = sessions.create({ tokenId: 'theirs', factoryId: 2 });
    // one factory signs in as often as the whole table holds, with many tokens (each under its
    // own cap): it keeps its newest MAX_SESSIONS_PER_FACTORY, and ends only its own
    const ours: string[] = [];
    for (let i = 0; i < MAX_SESSIONS; i++) {
      ours.push(sessions.create({ tokenId: `t${Math.floor(i / 10)}`, factoryId: 1 }).id);
    }
    expect(sessions.size).toBe(MAX_SESSIONS_PER_FACTORY + 1);
    expect(ended).toEqual(ours.slice(0, MAX_SESSIONS - MAX_SESSIONS_PER_FACTORY));
    expect(sessions.find(ours.at(-MAX_SESSIONS_PER_FACTORY))).toBeDefined();
    expect(sessions.find(theirs.id)).toBe(theirs.session);
    // and another factory signs in, signing out nobody
    ended.length = 0;
    const another = sessions.create({ tokenId: 'another', factoryId: 3 });
    expect(ended).toEqual([]);
    expect(sessions.find(another.id)).toBe(another.session);
  });

  it(`past ${MAX_SESSIONS} sessions ends the same factory's oldest, never another factory's`, () => {
    const sessions = new ConsoleSessions();
    const theirs = sessions.create({ tokenId: 'theirs', factoryId: 0 }); // the oldest of all
    // factories 1-9 at their cap, factory 10 one under it: the table is full
    const full = MAX_SESSIONS / MAX_SESSIONS_PER_FACTORY;
    const ours: string[] = [];
    for (let factoryId = 1; factoryId <= full; factoryId++) {
      const n = factoryId < full ? MAX_SESSIONS_PER_FACTORY : MAX_SESSIONS_PER_FACTORY - 1;
      for (let i = 0; i < n; i++) {
        const { id } = sessions.create({ tokenId: `f${factoryId}t${Math.floor(i / 10)}`, factoryId });
        if (factoryId === full) ours.push(id);
      }
    }
    expect(sessions.size).toBe(MAX_SESSIONS);
    sessions.create({ tokenId: 'new', factoryId: full });
    expect(sessions.size).toBe(MAX_SESSIONS);
    expect(sessions.find(theirs.id)).toBe(theirs.session);
    expect(sessions.find(ours[0])).toBeUndefined();
    expect(sessions.find(ours[1])).toBeDefined();
    // factory 11 has no session to give up: refused, and nobody is signed out
    expect(() => sessions.create({ tokenId: 'x', factoryId: full + 1 })).toThrow(
      /1000 sessions open, all of other factories: try again when some have signed out or expired/,
    );
    expect(sessions.size).toBe(MAX_SESSIONS);
    expect(sessions.find(theirs.id)).toBe(theirs.session);
  });
});

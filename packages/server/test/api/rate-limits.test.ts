import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestService, type TestService } from '../support/service.ts';

describe('management API rate limit per token', () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService('sqlite', {
      api: { listen: '127.0.0.1:0', rateLimits: { perToken: { burst: 5, perMinute: 1 } } },
    });
  });
  afterAll(async () => {
    await svc?.stop();
  });

  it('answers 429 rate_limited with Retry-After past the burst of one token, and changes nothing', async () => {
    for (let i = 0; i < 5; i++)
      expect((await svc.call('GET', '/ota/factories/demo/tokens/')).status).toBe(200);
    const limited = await svc.call('POST', '/ota/factories/demo/tokens/', {
      body: { description: 'never made', scopes: ['read'] },
    });
    expect(limited.status, JSON.stringify(limited.json)).toBe(429);
    expect(limited.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(limited.json.code).toBe('rate_limited');
    expect(limited.json.info.limit).toBe('api.rateLimits.perToken');
    expect(limited.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(Number(limited.headers.get('retry-after'))).toBe(limited.json.info.retryAfterSeconds);
    const tokens = await svc.service.ctx.database.db.selectFrom('api_tokens').select('description').execute();
    expect(tokens.map((t) => t.description)).not.toContain('never made');
  });

  it('counts a token padded with white space as the token itself, not on a bucket of its own', async () => {
    // the demo token's burst is spent (above); padded, it still authenticates, so it must be limited
    const padded = [' ', '\t', '\xa0', '\xa0\xa0', `\xa0${' '}`].map((pad) => `${svc.token}${pad}`);
    const statuses = await Promise.all(
      [...padded, `Bearer ${svc.token}\xa0`].map(
        (value, i) =>
          new Promise<number>((resolve, reject) => {
            const header = i < padded.length ? { 'osf-token': value } : { authorization: value };
            const req = httpRequest(`${svc.url}/ota/factories/demo/tokens/`, { headers: header }, (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            });
            req.on('error', reject);
            req.end();
          }),
      ),
    );
    expect(statuses).toEqual(statuses.map(() => 429));
  });

  it('limits guessed tokens too, each one on its own bucket; calls without a token are not limited per token', async () => {
    const guess = { 'osf-token': 'not-a-token' };
    const answers = [];
    for (let i = 0; i < 6; i++)
      answers.push(await svc.call('GET', '/ota/factories/demo/tokens/', { headers: guess }));
    expect(answers.map((a) => a.status)).toEqual([401, 401, 401, 401, 401, 429]);
    for (let i = 0; i < 8; i++) expect((await fetch(`${svc.url}/healthz`)).status).toBe(200);
  });
});

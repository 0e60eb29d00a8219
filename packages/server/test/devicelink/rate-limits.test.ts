import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DeviceLinkFixture, forgedIdentity, startDeviceLinkFixture } from './fixture.ts';

const MANIFEST = '/device-link/v1/manifest';

function expectRateLimited(
  res: { status: number; json: any; headers: Record<string, unknown> },
  limit: string,
) {
  expect(res.status, JSON.stringify(res.json)).toBe(429);
  expect(res.headers['content-type']).toBe('application/problem+json');
  expect(res.json.code).toBe('rate_limited');
  expect(res.json.info.limit).toBe(limit);
  expect(res.json.detail).toContain(limit);
  const retryAfter = String(res.headers['retry-after']);
  expect(retryAfter).toMatch(/^\d+$/);
  expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
  expect(res.json.info.retryAfterSeconds).toBe(Number(retryAfter));
}

describe('device-link rate limit per vendor identity', () => {
  let f: DeviceLinkFixture;
  beforeAll(async () => {
    f = await startDeviceLinkFixture('sqlite', {
      deviceLink: {
        listen: '127.0.0.1:0',
        rateLimits: { perIdentity: { burst: 3, perMinute: 1 } },
      },
    });
  });
  afterAll(async () => {
    await f?.svc.stop();
  });

  it('answers 429 rate_limited with Retry-After past the burst of one identity; others go on', async () => {
    const device = await f.device();
    for (let i = 0; i < 3; i++) expect((await f.call(device, { path: MANIFEST })).status).toBe(200);
    const limited = await f.call(device, { path: MANIFEST });
    expectRateLimited(limited, 'deviceLink.rateLimits.perIdentity');
    // nothing about the identity was looked at: another device is unaffected
    expect((await f.call(await f.device(), { path: MANIFEST })).status).toBe(200);
  });

  it('limits identities that need no trust at all (self-signed) the same way', async () => {
    const forged = await forgedIdentity(undefined);
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push(await f.call(forged, { path: MANIFEST }));
    expect(answers.slice(0, 3).map((a) => a.json.code)).toEqual([
      'untrusted_identity',
      'untrusted_identity',
      'untrusted_identity',
    ]);
    for (const a of answers.slice(3)) expectRateLimited(a, 'deviceLink.rateLimits.perIdentity');
  });
});

describe('device-link rate limit per client address', () => {
  let f: DeviceLinkFixture;
  beforeAll(async () => {
    f = await startDeviceLinkFixture('sqlite', {
      deviceLink: {
        listen: '127.0.0.1:0',
        rateLimits: { perAddress: { burst: 6, perMinute: 1 } },
      },
    });
  });
  afterAll(async () => {
    await f?.svc.stop();
  });

  it('counts every identity from one address, and calls without a certificate', async () => {
    const answers = [];
    for (let i = 0; i < 4; i++) answers.push(await f.call(await f.device(), { path: MANIFEST }));
    for (let i = 0; i < 2; i++) answers.push(await f.call(undefined, { path: MANIFEST }));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 401, 401]);
    expectRateLimited(await f.call(await f.device(), { path: MANIFEST }), 'deviceLink.rateLimits.perAddress');
    expectRateLimited(await f.call(undefined, { path: MANIFEST }), 'deviceLink.rateLimits.perAddress');
  });
});

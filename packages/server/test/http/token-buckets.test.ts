import { describe, expect, it } from 'vitest';
import { rateLimited, retryAfterSeconds, TokenBuckets } from '../../src/http/rate-limit.ts';

function clock() {
  let t = 1_000_000;
  return {
    now: () => t,
    advance(ms: number) {
      t += ms;
    },
  };
}

describe('TokenBuckets', () => {
  it('grants the burst at once, then refuses with the time until one token is back', () => {
    const c = clock();
    const buckets = new TokenBuckets({ burst: 3, perMinute: 6 }, { now: c.now });
    expect([buckets.take('a'), buckets.take('a'), buckets.take('a')]).toEqual([0, 0, 0]);
    expect(buckets.take('a')).toBe(10_000);
    c.advance(4_000);
    expect(buckets.take('a')).toBe(6_000);
  });

  it('refills lazily at perMinute, never above the burst', () => {
    const c = clock();
    const buckets = new TokenBuckets({ burst: 2, perMinute: 60 }, { now: c.now });
    buckets.take('a');
    buckets.take('a');
    c.advance(1_000);
    expect(buckets.take('a')).toBe(0);
    expect(buckets.take('a')).toBeGreaterThan(0);
    c.advance(3_600_000);
    expect([buckets.take('a'), buckets.take('a'), buckets.take('a')].map((w) => w === 0)).toEqual([
      true,
      true,
      false,
    ]);
  });

  it('keeps keys apart: one exhausted key leaves the others their burst', () => {
    const buckets = new TokenBuckets({ burst: 1, perMinute: 1 });
    buckets.take('a');
    expect(buckets.take('a')).toBeGreaterThan(0);
    expect(buckets.take('b')).toBe(0);
  });

  it('tracks at most maxKeys keys, dropping the least recently seen (many identities cannot grow memory)', () => {
    const buckets = new TokenBuckets({ burst: 1, perMinute: 1 }, { maxKeys: 100 });
    buckets.take('flooder');
    expect(buckets.take('flooder')).toBeGreaterThan(0);
    for (let i = 0; i < 10_000; i++) {
      buckets.take(`id-${i}`);
      // the flooder keeps coming back: it stays the most recent and stays limited
      if (i % 50 === 0) expect(buckets.take('flooder')).toBeGreaterThan(0);
    }
    expect(buckets.size).toBe(100);
  });

  it('admit throws rate_limited naming the limit and the seconds to wait', () => {
    const buckets = new TokenBuckets({ burst: 1, perMinute: 2 });
    buckets.admit('a', 'x.perA');
    let thrown: unknown;
    try {
      buckets.admit('a', 'x.perA');
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toMatchObject({ code: 'rate_limited', status: 429 });
    const detail = (thrown as { detail: Record<string, unknown> }).detail;
    expect(detail).toMatchObject({ limit: 'x.perA', burst: 1, perMinute: 2 });
    expect(detail.retryAfterSeconds).toBeGreaterThanOrEqual(30);
    expect((thrown as Error).message).toMatch(/x\.perA.*retry after \d+ s/);
  });
});

describe('retryAfterSeconds', () => {
  it('is whole seconds, at least the wait and at most a quarter more (jitter)', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 500; i++) {
      const s = retryAfterSeconds(20_000);
      expect(Number.isInteger(s)).toBe(true);
      expect(s).toBeGreaterThanOrEqual(20);
      expect(s).toBeLessThanOrEqual(25);
      seen.add(s);
    }
    expect(seen.size).toBeGreaterThan(1);
    expect(retryAfterSeconds(1)).toBeGreaterThanOrEqual(1);
    expect(rateLimited('l', { burst: 1, perMinute: 1 }, 0).detail?.retryAfterSeconds).toBeGreaterThanOrEqual(
      1,
    );
  });
});

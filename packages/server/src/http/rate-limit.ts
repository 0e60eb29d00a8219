import { randomInt } from 'node:crypto';
import { KeyferryError } from '@keyferry/core';
import { z } from 'zod';

/**
 * One token bucket's numbers: up to `burst` requests at once, refilled at `perMinute`.
 * Buckets live in the memory of one keyferryd process: several nodes behind one name each
 * limit on their own, so a client may get up to N times the rate from N nodes
 * (docs/configuration.md "Rate limits").
 */
export interface BucketLimit {
  burst: number;
  perMinute: number;
}

/** Keys one set of buckets tracks at most: an attacker with endless identities cannot grow memory past it. */
export const MAX_TRACKED_KEYS = 100_000;

/** A refused request waits until one token is back, plus up to this fraction more (jitter), so refused clients do not return in step. */
const RETRY_JITTER = 0.25;

/** The config schema of one bucket, with its defaults. */
export function bucketLimitSchema(defaults: Readonly<BucketLimit>) {
  return z
    .strictObject({
      burst: z.number().int().min(1).max(10_000_000).default(defaults.burst),
      perMinute: z.number().int().min(1).max(100_000_000).default(defaults.perMinute),
    })
    .prefault({});
}

/** The device-link's buckets: one per vendor identity (certificate fingerprint) and one per client address. */
export const DEVICE_LINK_RATE_LIMITS = {
  /** A device provisions in ~3 requests and retries with back-off: 60 at once is far above any real run. */
  perIdentity: { burst: 60, perMinute: 60 },
  /** A whole factory line may sit behind one NAT address. */
  perAddress: { burst: 10_000, perMinute: 60_000 },
} as const satisfies Record<string, BucketLimit>;

/**
 * The management API's buckets: per token (CLI bulk imports make thousands of calls in a row),
 * and the console's sign-in form, which carries its token in the body: per client address
 * before the token is looked up, per token once its secret matched.
 */
export const API_RATE_LIMITS = {
  perToken: { burst: 5_000, perMinute: 60_000 },
  /** A person signs in a few times a day; a few operators may share one address. */
  signInPerAddress: { burst: 20, perMinute: 10 },
  /** With the sessions a token may hold (MAX_SESSIONS_PER_TOKEN), one token cannot churn sessions. */
  signInPerToken: { burst: 10, perMinute: 5 },
} as const satisfies Record<string, BucketLimit>;

interface Bucket {
  tokens: number;
  /** When `tokens` was last computed (ms). */
  at: number;
}

/**
 * Token buckets by key, refilled lazily when a key is next seen (no timers). The Map is kept
 * in least-recently-used order (a key seen again moves to the end); past `maxKeys` the least
 * recently seen key is dropped, which forgets only a bucket nobody used for the longest time.
 */
export class TokenBuckets {
  readonly #buckets = new Map<string, Bucket>();
  readonly #limit: BucketLimit;
  readonly #maxKeys: number;
  readonly #now: () => number;

  constructor(limit: BucketLimit, options: { maxKeys?: number; now?: () => number } = {}) {
    this.#limit = limit;
    this.#maxKeys = options.maxKeys ?? MAX_TRACKED_KEYS;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Takes one token for `key` or throws `rate_limited` naming `limitName` (its config key),
   * e.g. `deviceLink.rateLimits.perAddress`.
   */
  admit(key: string, limitName: string): void {
    const waitMs = this.take(key);
    if (waitMs > 0) throw rateLimited(limitName, this.#limit, waitMs);
  }

  get size(): number {
    return this.#buckets.size;
  }

  /** Takes one token for `key`: 0 when granted, else the milliseconds until one is back. */
  take(key: string): number {
    const now = this.#now();
    const perMs = this.#limit.perMinute / 60_000;
    const seen = this.#buckets.get(key);
    let tokens = this.#limit.burst;
    if (seen) {
      tokens = Math.min(this.#limit.burst, seen.tokens + Math.max(0, now - seen.at) * perMs);
      this.#buckets.delete(key);
    } else if (this.#buckets.size >= this.#maxKeys) {
      this.#buckets.delete(this.#buckets.keys().next().value as string);
    }
    const granted = tokens >= 1;
    this.#buckets.set(key, { tokens: granted ? tokens - 1 : tokens, at: now });
    return granted ? 0 : Math.ceil((1 - tokens) / perMs);
  }
}

/** Whole seconds to wait, with jitter: at least the time until a token is back, at least 1. */
export function retryAfterSeconds(waitMs: number): number {
  const base = Math.max(1, Math.ceil(waitMs / 1000));
  return base + randomInt(0, Math.ceil(base * RETRY_JITTER) + 1);
}

/** The refusal of a request over `limit` (its config key), naming the limit and when to retry. */
export function rateLimited(limit: string, bucket: BucketLimit, waitMs: number): KeyferryError {
  const seconds = retryAfterSeconds(waitMs);
  return new KeyferryError(
    'rate_limited',
    `too many requests: over ${limit} (${bucket.burst} at once, ${bucket.perMinute} a minute); retry after ${seconds} s`,
    { detail: { limit, burst: bucket.burst, perMinute: bucket.perMinute, retryAfterSeconds: seconds } },
  );
}

/** The Retry-After value of a `rate_limited` refusal (what rateLimited computed). */
export function retryAfterHeader(error: KeyferryError): string | undefined {
  if (error.code !== 'rate_limited') return undefined;
  const seconds = error.detail?.retryAfterSeconds;
  return String(typeof seconds === 'number' ? seconds : retryAfterSeconds(60_000));
}

/**
 * The inputs of `npm run fuzz` (bench/fuzz.ts): a seeded random source and the mutations of
 * CSRs, JSON bodies and paths. Every input made here must be refused by keyferryd.
 */

/** A small seeded generator (mulberry32), so a seed repeats a run's inputs. */
export class Random {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
}

/**
 * A changed copy of a DER `valid` (never equal to it): bit flips, truncation, inserted or
 * removed bytes, a length byte changed, a tag changed.
 */
export function mutateDer(rng: Random, valid: Uint8Array): Uint8Array {
  for (;;) {
    const out = mutateOnce(rng, valid);
    if (out.length !== valid.length || out.some((b, i) => b !== valid[i])) return out;
  }
}

function mutateOnce(rng: Random, valid: Uint8Array): Uint8Array {
  const at = rng.int(valid.length);
  switch (rng.int(6)) {
    case 0:
    case 1: {
      const out = Uint8Array.from(valid);
      for (let k = 1 + rng.int(3); k > 0; k--) out[rng.int(out.length)]! ^= 1 << rng.int(8);
      return out;
    }
    case 2:
      return valid.slice(0, at);
    case 3: {
      const extra = Uint8Array.from({ length: 1 + rng.int(4) }, () => rng.int(256));
      return Uint8Array.from([...valid.subarray(0, at), ...extra, ...valid.subarray(at)]);
    }
    case 4:
      return Uint8Array.from([...valid.subarray(0, at), ...valid.subarray(at + 1 + rng.int(4))]);
    default: {
      const out = Uint8Array.from(valid);
      out[at] = rng.pick([0x00, 0x01, 0x7f, 0x80, 0x81, 0x82, 0x84, 0xff, 0x30, 0x31, 0x04, 0x03, 0xa0]);
      return out;
    }
  }
}

const ODD_STRINGS = [
  '',
  ' ',
  '\u0000',
  'é',
  '\u202e\u0041',
  '\ud83d\ude00',
  '𝔘𝔫𝔦',
  '\ufeff',
  'a'.repeat(5000),
  '../../etc/passwd',
  '%00',
  '<script>',
  "' OR 1=1 --",
];
const ODD_NUMBERS = [-1, 0, 1e308, -1e308, 2 ** 53 + 1, Number.MAX_SAFE_INTEGER, 0.5, 1.2345678901234568e29];

/** A JSON value of a wrong kind for any field: odd strings, numbers, nesting, null. */
export function oddJsonValue(rng: Random, depth = 0): unknown {
  switch (rng.int(depth > 2 ? 4 : 6)) {
    case 0:
      return rng.pick(ODD_STRINGS);
    case 1:
      return rng.pick(ODD_NUMBERS);
    case 2:
      return rng.pick([null, true, false]);
    case 3:
      return {};
    case 4:
      return Array.from({ length: rng.int(4) }, () => oddJsonValue(rng, depth + 1));
    default:
      return { [rng.pick(ODD_STRINGS)]: oddJsonValue(rng, depth + 1) };
  }
}

/** `[[[…]]]` or `{"a":{"a":…}}` `depth` deep. */
export function deepJson(rng: Random, depth: number): string {
  return rng.next() < 0.5
    ? `${'['.repeat(depth)}${']'.repeat(depth)}`
    : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
}

/** Bytes of broken JSON text: truncated, a flipped byte, invalid UTF-8, a number too big. */
export function brokenJson(rng: Random, valid: string): Buffer {
  const bytes = Buffer.from(valid, 'utf8');
  switch (rng.int(5)) {
    case 0:
      return bytes.subarray(0, rng.int(bytes.length));
    case 1:
      return Buffer.concat([bytes.subarray(0, bytes.length - 1), Buffer.from([0xc0, 0xaf, 0x7d])]);
    case 2:
      return Buffer.from(`${valid.slice(0, -1)},}`);
    case 3:
      return Buffer.from(`{"n": 1${'0'.repeat(400)}}`);
    default: {
      const out = Buffer.from(bytes);
      out[rng.int(out.length)] = rng.pick([0x00, 0x22, 0x7b, 0x5c, 0xff]);
      return out;
    }
  }
}

/** An id segment: huge numbers, negative, fractions, unicode, bad percent-encoding. */
export function oddId(rng: Random): string {
  return rng.pick([
    '0',
    '-1',
    '99999999999999999999999999999999999999',
    '9007199254740993',
    '1e309',
    '0x7fffffff',
    '1.5',
    'NaN',
    '%00',
    '%zz',
    '%c0%af',
    encodeURIComponent('é\u202e😀'),
    encodeURIComponent(rng.pick(ODD_STRINGS)).slice(0, 300),
    'a'.repeat(101),
    `0x04${'f'.repeat(40)}`,
    '1'.repeat(43),
  ]);
}

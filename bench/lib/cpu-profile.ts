/**
 * Where keyferryd's CPU goes, from the `--cpu-prof` profiles a bench had it write: the samples
 * taken while the bench's load ran, each put in one bucket by the first frame of its stack
 * (from the innermost out) that a bucket claims. Frames no bucket claims (events, promises,
 * timers) pass the sample on to their caller, so a sample lands where the work was asked for.
 *
 * V8's profiler sees JavaScript and what JavaScript calls: a native call (a SQLite statement,
 * a signature) counts for the JavaScript frame that made it. It does not see native work that
 * libuv runs with no JavaScript on the stack — the TLS handshake's cryptography, socket reads —
 * which it counts as idle: the bench gives that as the part of /proc's CPU the profile lacks.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

/** The parts of a `.cpuprofile` this reads (Chrome DevTools' format, as `node --cpu-prof` writes it). */
export interface CpuProfile {
  nodes: ProfileNode[];
  /** Microseconds on the monotonic clock `process.hrtime` reads. */
  startTime: number;
  endTime: number;
  samples: number[];
  /** Microseconds from the previous sample (from startTime for the first). */
  timeDeltas: number[];
}

/** A stretch of the monotonic clock in microseconds, as `hrtimeMicros()` gives it. */
export interface Window {
  startUs: number;
  endUs: number;
}

export const hrtimeMicros = (): number => Number(process.hrtime.bigint() / 1000n);

/** Buckets, in the order the bench prints them; each claims the frames `test` is true of. */
export const BUCKETS: ReadonlyArray<{ name: string; test: (f: CallFrame) => boolean }> = [
  { name: 'garbage collector', test: (f) => f.functionName === '(garbage collector)' },
  {
    name: 'SQLite statements run (better-sqlite3, commits included)',
    test: (f) =>
      f.url.includes('/better-sqlite3/') ||
      (f.url.includes('/kysely/') && f.url.includes('sqlite-driver') && f.functionName === 'executeQuery'),
  },
  { name: 'PostgreSQL client (pg: protocol, parsing)', test: (f) => /\/node_modules\/pg[^/]*\//.test(f.url) },
  { name: 'Kysely (queries built, compiled, run)', test: (f) => f.url.includes('/kysely/') },
  {
    name: 'CSR key import and signature checks (node:crypto)',
    test: (f) =>
      (f.url === 'node:internal/crypto/sig' && f.functionName.startsWith('verify')) ||
      f.url === 'node:internal/crypto/keys',
  },
  { name: 'certificate signature (node:crypto)', test: (f) => f.url === 'node:internal/crypto/sig' },
  { name: 'device identity (X509Certificate)', test: (f) => f.url === 'node:internal/crypto/x509' },
  { name: 'hashes and other node:crypto', test: (f) => f.url.startsWith('node:internal/crypto/') },
  { name: 'TLS (node:tls, JavaScript side)', test: (f) => /^node:(_tls|tls|internal\/tls)/.test(f.url) },
  {
    name: 'HTTP (node:http, fastify)',
    test: (f) =>
      /^node:(_http|http|internal\/http)/.test(f.url) ||
      /\/(fastify|find-my-way|avvio|light-my-request)\//.test(f.url),
  },
  {
    name: 'sockets and streams',
    test: (f) =>
      /^node:(net|internal\/streams|internal\/stream_base_commons|stream)/.test(f.url) ||
      (f.url === '' &&
        ['writev', 'writeBuffer', 'writeUtf8String', 'shutdown', 'close', 'readStop', 'readStart'].includes(
          f.functionName,
        )),
  },
  { name: 'validation (zod)', test: (f) => f.url.includes('/zod/') },
  { name: 'logging (pino)', test: (f) => /\/(pino|sonic-boom|thread-stream)/.test(f.url) },
  { name: "keyferry's own code", test: (f) => /\/packages\/[a-z]+\/(dist|src)\//.test(f.url) },
  { name: 'start-up (modules loaded and compiled)', test: (f) => f.url.startsWith('node:internal/modules/') },
  { name: '(program): native, outside JavaScript', test: (f) => f.functionName === '(program)' },
];
export const OTHER = 'other (Node internals, other packages)';
const NOT_SEEN = 'not in the profile: /proc less the rows above (native work, no JavaScript on the stack)';

/** Microseconds of the profile's samples within the windows, by bucket; idle samples are left out. */
export function bucketsOf(profile: CpuProfile, windows: readonly Window[]): Map<string, number> {
  const parent = new Map<number, ProfileNode>();
  const byId = new Map<number, ProfileNode>();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children ?? []) parent.set(child, node);
  }
  const bucketOfNode = new Map<number, string | undefined>();
  const bucketOf = (id: number): string | undefined => {
    if (bucketOfNode.has(id)) return bucketOfNode.get(id);
    let bucket: string | undefined;
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)') bucket = undefined;
    else {
      for (let node: ProfileNode | undefined = byId.get(id); node; node = parent.get(node.id)) {
        bucket = BUCKETS.find((b) => b.test(node!.callFrame))?.name;
        if (bucket) break;
      }
      bucket ??= OTHER;
    }
    bucketOfNode.set(id, bucket);
    return bucket;
  };
  const totals = new Map<string, number>();
  // a sample stands for the time until the next one
  let at = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0;
    const next = profile.timeDeltas[i + 1] ?? 0;
    if (!windows.some((w) => at >= w.startUs && at < w.endUs)) continue;
    const bucket = bucketOf(profile.samples[i]!);
    if (bucket !== undefined) totals.set(bucket, (totals.get(bucket) ?? 0) + next);
  }
  return totals;
}

/** The profiles `node --cpu-prof` wrote into `dir` for the processes `pids` (every thread of each). */
export function profilesOf(dir: string, pids: readonly number[]): CpuProfile[] {
  // CPU.<date>.<time>.<pid>.<thread>.<sequence>.cpuprofile
  const wanted = new Set(pids.map(String));
  return readdirSync(dir)
    .filter((name) => {
      const parts = name.split('.');
      return name.endsWith('.cpuprofile') && wanted.has(parts[3] ?? '');
    })
    .map((name) => JSON.parse(readFileSync(join(dir, name), 'utf8')) as CpuProfile);
}

/**
 * The lines a bench prints: each bucket in ms of CPU per unit of work over every profile, then
 * the CPU /proc counted (`procMsPerUnit`) that the profiles do not hold.
 */
export function profileLines(
  profiles: readonly CpuProfile[],
  windows: readonly Window[],
  units: number,
  procMsPerUnit: number,
  unit: string,
): string[] {
  const totals = new Map<string, number>();
  for (const profile of profiles) {
    for (const [bucket, us] of bucketsOf(profile, windows))
      totals.set(bucket, (totals.get(bucket) ?? 0) + us);
  }
  const perUnit = (us: number) => us / 1000 / units;
  const seen = [...totals.values()].reduce((a, b) => a + b, 0);
  const names = [...BUCKETS.map((b) => b.name), OTHER].filter((name) => totals.has(name));
  const rows: Array<[string, number]> = [
    ...names.map((name): [string, number] => [name, perUnit(totals.get(name)!)]),
    ['seen by the profiler, in all', perUnit(seen)],
    [NOT_SEEN, procMsPerUnit - perUnit(seen)],
    [`keyferryd's CPU per ${unit} (/proc)`, procMsPerUnit],
  ];
  const width = Math.max(...rows.map(([name]) => name.length));
  return [
    `profile:  ms of keyferryd CPU per ${unit} while measured, from ${profiles.length} profile${profiles.length === 1 ? '' : 's'} (each sample in the row of the first frame of its stack a row claims)`,
    ...rows.map(([name, ms]) => `  ${name.padEnd(width)} ${ms.toFixed(3).padStart(7)}`),
  ];
}

/**
 * Start-up of the programs as built (`npm run build`, what the bins run) beside the same
 * programs run from their TypeScript source through tsx (what the bins did before): wall time
 * from spawn to exit (`--help`) or to `listen.json` (keyferryd), and peak RSS, the median of
 * several runs of each, run in turn so that a busy machine slows both alike.
 * Run: `npm run bench:startup [-- --runs N]` (default 5; `--help` for the options).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildAll, REPO_ROOT } from '../scripts/build.ts';
import { median } from './lib/keep-alive-client.ts';
import { benchOptions, positiveInteger } from './lib/options.ts';

const DEFAULT_RUNS = 5;
/** Issue 13's budget for the agent on a device: `keyferry-agent --help`. */
const AGENT_HELP_TARGET = { seconds: 0.4, megabytes: 60 };
/** How often the bench looks for keyferryd's listen.json (adds at most this to its figure). */
const LISTEN_POLL_MS = 5;
const MAX_RSS = join(REPO_ROOT, 'bench/lib/max-rss.mjs');
const FROM_SOURCE = join(REPO_ROOT, 'bench/lib/run-from-source.mjs');

const options = benchOptions(
  'Usage: npm run bench:startup [-- options]\n\nStarts keyferry-agent, keyferry and keyferryd as built and from their TypeScript source through\ntsx, in turn, and prints the median wall time and peak RSS of each.',
  {
    runs: {
      value: 'N',
      default: String(DEFAULT_RUNS),
      help: 'runs of each program and form',
      check: positiveInteger,
    },
  },
);
const runs = Number(options.runs);

interface Case {
  label: string;
  pkg: string;
  bin: string;
  args: string[];
  /** keyferryd: it counts as started once listen.json is in its data dir. */
  untilListening?: boolean;
}

const CASES: Case[] = [
  { label: 'keyferry-agent --help', pkg: 'agent', bin: 'keyferry-agent', args: ['--help'] },
  { label: 'keyferry --help', pkg: 'cli', bin: 'keyferry', args: ['--help'] },
  { label: 'keyferryd until listen.json', pkg: 'server', bin: 'keyferryd', args: [], untilListening: true },
];

type Variant = 'built' | 'tsx';
interface Sample {
  seconds: number;
  megabytes: number;
}

const work = mkdtempSync(join(tmpdir(), 'keyferry-bench-startup-'));
const dataDir = join(work, 'data');
const env = {
  ...process.env,
  KEYFERRY_DEBUG: '',
  KEYFERRY_DATA_DIR: dataDir,
  KEYFERRY_API_LISTEN: '127.0.0.1:0',
  KEYFERRY_DEVICE_LINK_LISTEN: '127.0.0.1:0',
  KEYFERRY_GATEWAY_LISTEN: '127.0.0.1:0',
  KEYFERRY_LOG_LEVEL: 'warn',
};

async function runOnce(c: Case, variant: Variant): Promise<Sample> {
  const rssFile = join(work, 'rss');
  rmSync(rssFile, { force: true });
  const listenFile = join(dataDir, 'listen.json');
  rmSync(listenFile, { force: true });
  const program =
    variant === 'built'
      ? [join(REPO_ROOT, 'packages', c.pkg, 'bin', `${c.bin}.js`)]
      : [FROM_SOURCE, join(REPO_ROOT, 'packages', c.pkg, 'src/main.ts')];
  const started = performance.now();
  const child = spawn(process.execPath, ['--import', MAX_RSS, ...program, ...c.args], {
    cwd: work,
    env: { ...env, KEYFERRY_BENCH_RSS_FILE: rssFile },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  let seconds: number;
  if (c.untilListening) {
    while (!existsSync(listenFile)) {
      if (child.exitCode !== null)
        throw new Error(`${c.bin} (${variant}) exited ${child.exitCode}: ${stderr}`);
      await sleep(LISTEN_POLL_MS);
    }
    seconds = (performance.now() - started) / 1000;
    child.kill('SIGTERM');
    await exited;
  } else {
    const status = await exited;
    seconds = (performance.now() - started) / 1000;
    if (status !== 0)
      throw new Error(`${c.bin} (${variant}) ${c.args.join(' ')} exited ${status}: ${stderr}`);
  }
  const kib = Number(readFileSync(rssFile, 'utf8'));
  return { seconds, megabytes: (kib * 1024) / 1e6 };
}

const show = (s: Sample) => `${s.seconds.toFixed(2)} s ${s.megabytes.toFixed(0).padStart(4)} MB`;

try {
  await buildAll();
  process.stderr.write(`keyferryd's first start (database, keys, demo factory) is not counted: warming up\n`);
  await runOnce(CASES[2]!, 'built');
  const samples = new Map<string, Sample[]>();
  for (let round = 1; round <= runs; round++) {
    process.stderr.write(`round ${round} of ${runs}\n`);
    for (const c of CASES) {
      for (const variant of ['built', 'tsx'] as const) {
        const key = `${c.label}|${variant}`;
        samples.set(key, [...(samples.get(key) ?? []), await runOnce(c, variant)]);
      }
    }
  }
  const med = (c: Case, v: Variant): Sample => {
    const all = samples.get(`${c.label}|${v}`)!;
    return { seconds: median(all.map((s) => s.seconds)), megabytes: median(all.map((s) => s.megabytes)) };
  };
  process.stdout.write(
    `\nStart-up, median of ${runs} run(s); node ${process.version}, ${cpus().length} cores; wall time and peak RSS\n` +
      `${'PROGRAM'.padEnd(30)}${'BUILT (bin/, dist/)'.padEnd(22)}${'TSX (source)'.padEnd(22)}TARGET\n`,
  );
  for (const c of CASES) {
    const built = med(c, 'built');
    let target = '';
    if (c.bin === 'keyferry-agent') {
      const met =
        built.seconds <= AGENT_HELP_TARGET.seconds && built.megabytes <= AGENT_HELP_TARGET.megabytes;
      target = `≤ ${AGENT_HELP_TARGET.seconds} s, ≤ ${AGENT_HELP_TARGET.megabytes} MB: ${met ? 'met' : 'NOT met'}`;
    }
    process.stdout.write(
      `${c.label.padEnd(30)}${show(built).padEnd(22)}${show(med(c, 'tsx')).padEnd(22)}${target}\n`,
    );
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

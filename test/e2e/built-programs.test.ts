import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PROGRAMS } from '../../scripts/build.ts';
import { BINS, PROCESS_TEST_TIMEOUT_MS, REPO_ROOT, runBinAsync, runCommand } from '../support/processes.ts';

const TRACE_HOOK = join(REPO_ROOT, 'test/support/module-trace/register.mjs');
const BIN_OF = {
  keyferryd: 'keyferryd',
  keyferry: 'keyferry',
  'keyferry-agent': 'agent',
  'keyferry-sim': 'sim',
} as const;

const work = mkdtempSync(join(tmpdir(), 'keyferry-built-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Runs a program's `--help` and returns the URLs of every module it loaded. */
async function helpLoads(bin: keyof typeof BINS): Promise<string[]> {
  const trace = join(work, `${bin}.modules`);
  const res = await runBinAsync(bin, ['--help'], {
    env: { NODE_OPTIONS: `--import=${TRACE_HOOK}`, KEYFERRY_MODULE_TRACE: trace },
  });
  expect(res.status, res.stderr).toBe(0);
  expect(res.stdout).toMatch(/^Usage: /);
  return readFileSync(trace, 'utf8').trim().split('\n');
}

/** Issue 13 §1: the programs run the JavaScript that `npm run build` wrote, not TypeScript through tsx. */
describe('the bin/ entries run the built programs', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it.each(PROGRAMS.map((p) => [p.bin, p.pkg] as const))(
    '%s --help loads packages/%s/dist and no TypeScript, no tsx',
    async (name, pkg) => {
      const loaded = await helpLoads(BIN_OF[name]);
      expect(loaded).toContain(`file://${REPO_ROOT}/packages/${pkg}/dist/main.js`);
      expect(loaded.filter((url) => url.endsWith('.ts') || url.includes('/node_modules/tsx/'))).toEqual([]);
    },
  );

  // the agent's start-up budget on a device (≤ 0.4 s, ≤ 60 MB; `npm run bench:startup`) rests on this
  it('keyferry-agent --help loads neither mqtt nor PKCS#11 nor the ASN.1 libraries', async () => {
    const loaded = await helpLoads('agent');
    expect(loaded.filter((url) => /\/node_modules\/(mqtt|pkcs11js|@peculiar)\//.test(url))).toEqual([]);
  });

  // a thread's script is plain JavaScript kept beside the source (storage/*-worker.mjs) and named
  // from the bundle relative to it: a build that moved one would fail only when the thread starts
  it('every thread script a bundle starts is there', () => {
    const bundle = readFileSync(join(REPO_ROOT, 'packages/server/dist/main.js'), 'utf8');
    const scripts = [
      ...bundle.matchAll(/new URL\("(\.\/[\w-]+\.mjs)", new URL\("([^"]+)", import\.meta\.url\)\.href\)/g),
    ].map(
      ([, script, source]) => new URL(script!, new URL(source!, `file://${REPO_ROOT}/packages/server/dist/`)),
    );
    expect(scripts.map((url) => url.pathname.split('/').pop()).sort()).toEqual([
      'thread-reader-worker.mjs',
      'wal-checkpoint-worker.mjs',
    ]);
    for (const url of scripts) expect(existsSync(url), url.pathname).toBe(true);
  });

  it('a bin whose build is missing says so and what to run', async () => {
    const pkgDir = join(work, 'unbuilt');
    mkdirSync(join(pkgDir, 'bin'), { recursive: true });
    copyFileSync(BINS.keyferry, join(pkgDir, 'bin/keyferry.js'));
    const { status, stderr } = await runCommand(process.execPath, [
      join(pkgDir, 'bin/keyferry.js'),
      '--help',
    ]);
    expect(status).toBe(1);
    expect(stderr).toBe('ERROR: keyferry is not built (no packages/cli/dist/main.js): run `npm run build`\n');
  });
});

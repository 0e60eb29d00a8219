import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCsr, softSigner } from '@keyferry/core';
import { afterAll, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS, REPO_ROOT, resultCounters, runCommand } from '../support/processes.ts';

/** The fuzzer's own limit; a hang fails here with its output. */
const FUZZ_TIMEOUT_MS = 540_000;

function fuzz(args: string[]) {
  // the suite's global setup has built the programs; rebuilding would rewrite dist/ under other tests
  return runCommand(process.execPath, ['--import', 'tsx', 'bench/fuzz.ts', '--no-build', ...args], {
    cwd: REPO_ROOT,
    timeoutMs: FUZZ_TIMEOUT_MS,
  });
}

const FAILURE_COUNTERS = [
  'crashes',
  'hangs',
  'unexpected_5xx',
  'not_problem',
  'no_answer',
  'issued',
  'gateway_accepted',
  'db_changed',
  'integrity_errors',
];

/**
 * `npm run fuzz` (issue 12 §3): hostile inputs on the three listeners of a fresh keyferryd;
 * every failure counter of its RESULT line must be 0. Also the corpus of kept failing inputs is
 * replayed, and a corpus with a valid enrollment shows that the checks do catch an issuance.
 */
describe('npm run fuzz', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  const work = mkdtempSync(join(tmpdir(), 'keyferry-fuzz-test-'));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('--help prints the usage and exits 0', async () => {
    const res = await fuzz(['--help']);
    expect(res.stdout).toMatch(/^Usage: npm run fuzz -- --seconds N \[--seed S\]/);
    expect(res.stdout).toContain('--replay');
    expect(res.status).toBe(0);
  });

  it('refuses nonsense options with exit 2 and says which', async () => {
    for (const [args, message] of [
      [['--seconds', 'ten'], '--seconds takes a positive integer, not "ten"'],
      [['--seed', 'abc'], '--seed takes a non-negative integer, not "abc"'],
      [['--workers', '0'], '--workers takes a positive integer, not "0"'],
      [['--frobnicate'], "Unknown option '--frobnicate'"],
    ] as const) {
      const res = await fuzz([...args]);
      expect(res.stderr, args.join(' ')).toContain(message);
      expect(res.status, args.join(' ')).toBe(2);
      expect(res.stdout).toBe('');
    }
  });

  it('30 s of hostile inputs: no crash, hang, 5xx, non-problem answer, issuance or database change', async () => {
    const corpus = join(work, 'found');
    const res = await fuzz(['--seconds', '30', '--seed', '12', '--corpus', corpus]);
    const counters = resultCounters(res.stdout);
    expect(Number(counters.inputs), res.stdout + res.stderr).toBeGreaterThan(0);
    for (const name of FAILURE_COUNTERS) expect(counters[name], `${name}\n${res.stdout}`).toBe('0');
    expect(res.status).toBe(0);
    expect(() => readdirSync(corpus)).toThrow(); // nothing failed, nothing written
  });

  it('replays test/fuzz-corpus/: every kept input now passes', async () => {
    const res = await fuzz(['--replay']);
    const counters = resultCounters(res.stdout);
    expect(res.stdout).toMatch(/fuzz: replaying \d+ inputs of test\/fuzz-corpus/);
    for (const name of FAILURE_COUNTERS) expect(counters[name], `${name}\n${res.stdout}`).toBe('0');
    expect(res.status).toBe(0);
  });

  it('a corpus input that is a valid enrollment is caught: issued=1, exit 1, the input kept', async () => {
    const corpus = join(work, 'valid-enroll');
    const csr = await createCsr({
      subject: { CN: 'device' },
      signer: softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey),
    });
    mkdirSync(corpus);
    writeFileSync(
      join(corpus, 'valid.json'),
      JSON.stringify({
        listener: 'device-link',
        identity: 'allow-listed',
        kind: 'valid',
        method: 'POST',
        path: '/.well-known/est/fio-device-gateway-ca/simpleenroll',
        headers: { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' },
        bodyBase64: Buffer.from(Buffer.from(csr).toString('base64')).toString('base64'),
      }),
    );
    const res = await fuzz(['--replay', '--corpus', corpus]);
    expect(resultCounters(res.stdout), res.stdout + res.stderr).toMatchObject({ inputs: '1', issued: '1' });
    expect(res.stdout).toContain('FAIL an invalid device-link input was accepted');
    expect(res.status).toBe(1);
    // kept once for the 2xx answer and once for the database change of its round
    const kept = readdirSync(corpus).filter((f) => f.startsWith('device-link-valid-'));
    expect(kept.length).toBeGreaterThanOrEqual(1);
  });
});

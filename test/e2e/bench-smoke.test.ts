import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS, REPO_ROOT, runCommand } from '../support/processes.ts';

const TSX = join(REPO_ROOT, 'node_modules/tsx/dist/cli.mjs');

/**
 * `npm run bench` must not rot: it runs end to end with tiny counts (a real keyferryd, a few
 * devices through the device-link) and prints its table. No figure is asserted — a bench is not a test.
 */
describe('npm run bench (smoke, tiny counts)', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('exits 0 and prints the table with every row', async () => {
    const run = await runCommand(process.execPath, [
      TSX,
      'bench/provisioning.ts',
      '--devices',
      '5',
      '--csrs',
      '5',
      '--seconds',
      '0.05',
      '--no-peer',
    ]);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^MEASURE +FIGURE +COMPARISON$/m);
    for (const row of [
      'P-256 sign (node:crypto, 1 core)',
      'ceiling: 1 enrollment = 2 verify + 1 sign',
      'issue: keyferry fast (CSR verify + template)',
      'issue: cfssl (peer CA)',
      'device-link: provisioned devices (5 in flight)',
      'device-link: simpleenroll p50/p90/p99',
    ]) {
      expect(run.stdout).toContain(row);
    }
    expect(run.stdout).toContain('skipped (--no-peer)');
    expect(run.stdout).toContain('5 devices in');
  });
});

describe('npm run bench:startup (smoke, one run)', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('prints built and tsx figures for the three programs, and the agent target line', async () => {
    const run = await runCommand(process.execPath, [TSX, 'bench/startup.ts', '--runs', '1']);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^PROGRAM +BUILT \(bin\/, dist\/\) +TSX \(source\) +TARGET$/m);
    const figure = String.raw`\d+\.\d\d s +\d+ MB`;
    for (const label of ['keyferry-agent --help', 'keyferry --help', 'keyferryd until listen.json']) {
      expect(run.stdout).toMatch(new RegExp(`^${label} +${figure} +${figure}`, 'm'));
    }
    // the figures are not asserted (a bench is not a test), only that the target is judged
    expect(run.stdout).toMatch(/^keyferry-agent --help .*≤ 0\.4 s, ≤ 60 MB: (met|NOT met)$/m);
  });
});

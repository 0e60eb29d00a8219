import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/processes.ts';

/**
 * `npm run bench` must not rot: it runs end to end with tiny counts (a real keyferryd, a few
 * devices through the device-link) and prints its table. No figure is asserted — a bench is not a test.
 */
describe('npm run bench (smoke, tiny counts)', () => {
  it('exits 0 and prints the table with every row', () => {
    const run = spawnSync(
      'npx',
      ['tsx', 'bench/provisioning.ts', '--devices', '5', '--csrs', '5', '--seconds', '0.05', '--no-peer'],
      { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000 },
    );
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

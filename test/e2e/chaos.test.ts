import { describe, expect, it } from 'vitest';
import {
  PROCESS_TEST_TIMEOUT_MS,
  REPO_ROOT,
  resultCounters as result,
  runCommand,
} from '../support/processes.ts';

/** The harness's own limit for a small run; a hang fails here with its output. */
const CHAOS_TIMEOUT_MS = 540_000;

function chaos(args: string[]) {
  // the suite's global setup has built the programs; rebuilding would rewrite dist/ under other tests
  return runCommand(process.execPath, ['--import', 'tsx', 'scripts/chaos.ts', '--no-build', ...args], {
    cwd: REPO_ROOT,
    timeoutMs: CHAOS_TIMEOUT_MS,
  });
}

/**
 * `npm run chaos`, small: keyferryd is SIGKILLed mid-fleet and started again, the agent is
 * killed at each crash point and run again; every device must end completed, with no doubled
 * live certificate, no audit gap and the custody keys unchanged.
 */
describe('npm run chaos', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('--help prints the usage and exits 0', async () => {
    const res = await chaos(['--help']);
    expect(res.stdout).toMatch(
      /^Usage: npm run chaos -- \[--storage sqlite\|postgres\] --devices N --kills K/,
    );
    expect(res.stdout).toContain('RESULT kills=');
    expect(res.status).toBe(0);
  });

  it('refuses nonsense options with exit 2 and says which', async () => {
    for (const [args, message] of [
      [
        ['--devices', '10', '--kills', '1', '--storage', 'mysql'],
        '--storage mysql is neither sqlite nor postgres',
      ],
      [['--devices', 'ten', '--kills', '1'], '--devices ten is not a whole number from 5 to 100000'],
      [['--kills', '1'], '--devices is required'],
      [['--devices', '10', '--kills', '1', '--frobnicate'], "Unknown option '--frobnicate'"],
    ] as const) {
      const res = await chaos([...args]);
      expect(res.stderr, args.join(' ')).toContain(`ERROR: ${message}\n`);
      expect(res.status, args.join(' ')).toBe(2);
      expect(res.stdout).toBe('');
    }
  });

  it('sqlite: 50 devices, 2 keyferryd kills, 4 agent kills: all completed, no duplicates, no gaps', async () => {
    const res = await chaos(['--devices', '50', '--kills', '2', '--seed', '7', '--concurrency', '4']);
    expect(result(res.stdout), res.stderr).toMatchObject({
      kills: '2',
      devices: '50',
      completed: '50',
      duplicate_live_certs: '0',
      audit_gaps: '0',
      agent_kills: '4',
      agent_converged: '4',
      ca_keys_intact: 'yes',
      storage: 'sqlite',
    });
    expect(res.status, res.stderr).toBe(0);
  });

  it('postgres: 20 devices, 2 keyferryd kills, 4 agent kills: all completed, no duplicates, no gaps', async () => {
    const res = await chaos([
      '--storage',
      'postgres',
      '--devices',
      '20',
      '--kills',
      '2',
      '--seed',
      '3',
      '--concurrency',
      '2',
    ]);
    expect(result(res.stdout), res.stderr).toMatchObject({
      kills: '2',
      devices: '20',
      completed: '20',
      duplicate_live_certs: '0',
      audit_gaps: '0',
      agent_kills: '4',
      agent_converged: '4',
      ca_keys_intact: 'yes',
      storage: 'postgres',
    });
    expect(res.status, res.stderr).toBe(0);
  });
});

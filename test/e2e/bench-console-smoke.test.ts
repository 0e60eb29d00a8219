import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/processes.ts';

const run = promisify(execFile);

/**
 * `npm run bench:console` must not rot: it runs with a tiny fleet and prints every row. The
 * time is not asserted (a bench is not a test); over the limit it exits 1 saying so.
 */
describe('npm run bench:console (smoke, 200 devices)', () => {
  it('prints the overview against the limit and the other pages', { timeout: 180_000 }, async () => {
    const answer = await run('npx', ['tsx', 'bench/console.ts', '--devices', '200'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
    }).catch((err: { code: number; stdout: string; stderr: string }) => {
      expect(err.stderr).toMatch(/FAIL: the overview took [0-9.]+ ms, over the 200 ms limit/);
      return err;
    });
    expect(answer.stdout).toMatch(/web console on SQLite: 200 devices \(364 object states\)/);
    expect(answer.stdout).toMatch(
      /overview {2}GET \/console\/: [0-9.]+ ms wall, [0-9.]+ ms CPU .*limit 200 ms: [0-9.]+ of the limit/,
    );
    for (const row of ['devices   first page:', 'devices   by state (failed):', 'device    one page:']) {
      expect(answer.stdout).toContain(row);
    }
  });
});

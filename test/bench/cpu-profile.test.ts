import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bucketsOf, OTHER, profileLines, profilesOf } from '../../bench/lib/cpu-profile.ts';

/**
 * The benches' profile breakdown (bench/lib/cpu-profile.ts) on a real `node --cpu-prof` profile:
 * a program that signs in a loop during a window it prints, and spins in its own code before and
 * after. Every loop runs for a span of the clock, not a count, so the shares hold on a busy machine.
 */
describe('CPU profile breakdown', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keyferry-cpuprof-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const program = `
    const { generateKeyPairSync, sign } = require('node:crypto');
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const now = () => Number(process.hrtime.bigint() / 1000n);
    function spin(us) { const end = now() + us; let x = 0; while (now() < end) x += Math.sqrt(x + 1); return x; }
    spin(300000);
    const startUs = now();
    for (const end = startUs + 400000; now() < end; ) sign('sha256', Buffer.alloc(64, 1), privateKey);
    const endUs = now();
    spin(300000);
    process.stdout.write(JSON.stringify({ startUs, endUs }));
  `;

  it('counts only the window, each sample in the row its innermost claimed frame names', () => {
    writeFileSync(join(dir, 'program.cjs'), program);
    const out = execFileSync(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${dir}`, 'program.cjs'], {
      cwd: dir,
      encoding: 'utf8',
    });
    const window = JSON.parse(out) as { startUs: number; endUs: number };
    const name = readdirSync(dir).find((n) => n.endsWith('.cpuprofile'))!;
    const pid = Number(name.split('.')[3]);
    const profiles = profilesOf(dir, [pid]);
    expect(profiles).toHaveLength(1);
    expect(profilesOf(dir, [pid + 1])).toEqual([]);

    const buckets = bucketsOf(profiles[0]!, [window]);
    const total = [...buckets.values()].reduce((a, b) => a + b, 0);
    const span = window.endUs - window.startUs;
    // the samples of the window and no others: the spinning before and after (600 ms) is left out
    expect(total).toBeGreaterThan(span * 0.5);
    expect(total).toBeLessThan(span * 1.1);
    // signing, called from the program's own loop, is the signature's row, not the caller's
    const signing = buckets.get('certificate signature (node:crypto)') ?? 0;
    expect(signing).toBeGreaterThan(total * 0.5);
    expect(buckets.get(OTHER) ?? 0).toBeLessThan(total * 0.4);

    const lines = profileLines(profiles, [window], 4, 500, 'device');
    expect(lines[0]).toMatch(/^profile: {2}ms of keyferryd CPU per device while measured, from 1 profile /);
    const row = (label: string) =>
      Number(
        lines
          .find((l) => l.trimStart().startsWith(label))
          ?.trim()
          .split(/ +/)
          .pop(),
      );
    expect(row('certificate signature')).toBeCloseTo(signing / 1000 / 4, 2);
    expect(row('seen by the profiler')).toBeCloseTo(total / 1000 / 4, 2);
    expect(row('not in the profile')).toBeCloseTo(500 - total / 1000 / 4, 2);
    expect(row("keyferryd's CPU per device (/proc)")).toBe(500);
  });
});

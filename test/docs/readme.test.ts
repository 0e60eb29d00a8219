import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseIdFile } from '../../packages/cli/src/devices/id-file.ts';
import { REPO_ROOT } from '../support/processes.ts';

const README = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');

describe('README', () => {
  it('keys ca create puts the offline root key outside the checkout (was: ./pki, in it)', () => {
    const dirs = [...README.matchAll(/keyferry keys ca create (\S+)/g)].map((m) => m[1]);
    expect(dirs.length).toBeGreaterThan(0);
    for (const dir of dirs) expect(dir).toMatch(/^(?:~\/|\$HOME\/|\/)/);
  });

  it('a pki/ made in the checkout anyway is ignored by git (was: not ignored)', () => {
    const ignored = execFileSync('git', ['check-ignore', 'pki/factory_ca.key'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
    });
    expect(ignored.trim()).toBe('pki/factory_ca.key');
  });

  it("shows --file's two accepted shapes, and each is read as it says (was: fleet.csv unexplained)", () => {
    const section = README.slice(README.indexOf('`--file` takes'));
    const blocks = [...section.matchAll(/```text\n([\s\S]*?)```/g)].map((m) => m[1] as string).slice(0, 2);
    expect(blocks).toHaveLength(2);
    const [lines, csv] = blocks.map((b, i) => parseIdFile(`example ${i + 1}`, Buffer.from(b)));
    expect(lines?.format).toBe('lines');
    expect(csv?.format).toBe('csv');
    for (const parsed of [lines, csv]) {
      expect(parsed?.invalid).toEqual([]);
      expect(parsed?.duplicates).toEqual([]);
      expect(parsed?.ids.length).toBeGreaterThan(0);
    }
  });
});

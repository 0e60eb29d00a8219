import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCommand } from '../../../test/support/processes.ts';

const work = mkdtempSync(join(tmpdir(), 'keyferry-atomic-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('writeFileAtomic (sota.toml, the soft secure element files)', { timeout: 120_000 }, () => {
  it('leaves the old file, not a cut one, when the disk takes only part of the new', async () => {
    const target = join(work, 'sota.toml');
    writeFileSync(target, 'old\n');
    const module = join(import.meta.dirname, '../src/atomic-file.ts');
    // a file size limit of 512 bytes: the first write takes 512 of 6,000, the next fails (EFBIG)
    const script = `import(${JSON.stringify(module)}).then((m) => m.writeFileAtomic(${JSON.stringify(target)}, 'x'.repeat(6000), 0o644))`;
    const res = await runCommand('sh', [
      '-c',
      'ulimit -f 1; exec "$0" "$@"',
      process.execPath,
      '--import',
      'tsx',
      '-e',
      script,
    ]);
    expect(res.status, res.stdout).not.toBe(0);
    expect(res.stderr).toContain('EFBIG');
    expect(readFileSync(target, 'utf8')).toBe('old\n');
    expect(readdirSync(work)).toEqual(['sota.toml']);
  });
});

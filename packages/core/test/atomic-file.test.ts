import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCommand } from '../../../test/support/processes.ts';
import { writeFileAtomic } from '../src/index.ts';

const work = mkdtempSync(join(tmpdir(), 'keyferry-atomic-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A fresh directory of its own for each test, so what it leaves behind is all there is. */
function dir(name: string): string {
  const path = join(work, name);
  mkdirSync(path);
  return path;
}

describe('writeFileAtomic (listen.json, the demo token, the login file, sota.toml, the soft SE files)', {
  timeout: 120_000,
}, () => {
  it('leaves the old file, not a cut one, when the disk takes only part of the new', async () => {
    const at = dir('short-write');
    const target = join(at, 'sota.toml');
    writeFileSync(target, 'old\n');
    const module = join(import.meta.dirname, '../src/program/atomic-file.ts');
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
    expect(readdirSync(at)).toEqual(['sota.toml']);
  });

  it('a rename that fails leaves no temp file beside the target', () => {
    const at = dir('rename-fails');
    const target = join(at, 'listen.json');
    mkdirSync(target); // a file cannot be renamed over a directory (EISDIR)
    expect(() => writeFileAtomic(target, '{}\n', 0o600)).toThrow(expect.objectContaining({ code: 'EISDIR' }));
    expect(readdirSync(at)).toEqual(['listen.json']);
  });

  it('a symlink or file already at the temp name is replaced, never written through', () => {
    const at = dir('temp-taken');
    const elsewhere = dir('elsewhere');
    const victim = join(elsewhere, 'victim');
    writeFileSync(victim, 'victim\n', { mode: 0o644 });
    const target = join(at, 'demo.token');
    symlinkSync(victim, `${target}.${process.pid}.tmp`);
    writeFileAtomic(target, 'kf_secret\n', 0o600);
    expect(readFileSync(victim, 'utf8')).toBe('victim\n');
    expect(lstatSync(target).isFile()).toBe(true);
    expect(readFileSync(target, 'utf8')).toBe('kf_secret\n');
    expect(statSync(target).mode & 0o777).toBe(0o600);

    // a 0644 file left at the temp name by a crash does not lend the new file its mode
    writeFileSync(`${target}.${process.pid}.tmp`, 'stale\n', { mode: 0o644 });
    writeFileAtomic(target, 'kf_other\n', 0o600);
    expect(readFileSync(target, 'utf8')).toBe('kf_other\n');
    expect(statSync(target).mode & 0o777).toBe(0o600);
    expect(readdirSync(at)).toEqual(['demo.token']);
  });

  it('the file has the mode asked for whatever the umask', () => {
    const at = dir('umask');
    const umask = process.umask(0o277); // would leave 0400 of 0600, 0444 of 0644
    try {
      writeFileAtomic(join(at, 'config.json'), '{}\n', 0o600);
      writeFileAtomic(join(at, 'sota.toml'), 'x\n', 0o644);
    } finally {
      process.umask(umask);
    }
    expect(statSync(join(at, 'config.json')).mode & 0o777).toBe(0o600);
    expect(statSync(join(at, 'sota.toml')).mode & 0o777).toBe(0o644);
  });
});

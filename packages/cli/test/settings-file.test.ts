import type * as fs from 'node:fs';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { writeSettingsFile } from '../src/settings.ts';

/** Each write the settings make, and who may read what it wrote right after it. */
const writes = vi.hoisted(() => ({ seen: [] as Array<{ path: string; mode: number }> }));
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof fs>();
  return {
    ...real,
    writeFileSync: (path: fs.PathOrFileDescriptor, ...rest: unknown[]) => {
      (real.writeFileSync as (...args: unknown[]) => void)(path, ...rest);
      if (typeof path === 'string') writes.seen.push({ path, mode: real.statSync(path).mode & 0o777 });
    },
  };
});

describe('keyferry login writes the token where only its user can read it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keyferry-settings-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('an existing 0644 config.json ends 0600, and no write ever left the token readable by others (was: written, then chmod)', () => {
    const file = join(dir, 'config.json');
    writeFileSync(file, '{}\n');
    chmodSync(file, 0o644);
    writes.seen.length = 0;
    expect(
      writeSettingsFile({ server: 'https://k.example', token: 'kf_secret' }, { KEYFERRY_CONFIG_FILE: file }),
    ).toBe(file);
    expect(writes.seen.length).toBeGreaterThan(0);
    for (const { path, mode } of writes.seen)
      expect({ path, mode: mode.toString(8) }).toEqual({ path, mode: '600' });
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual({
      server: 'https://k.example',
      token: 'kf_secret',
    });
    // nothing left beside it
    expect(readdirSync(dir)).toEqual(['config.json']);
  });
});

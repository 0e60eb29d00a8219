import type * as fs from 'node:fs';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { readSettingsFile, writeSettingsFile } from '../src/settings.ts';

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

describe('a login file that cannot be read is refused, naming it and what to do (was: silently ignored)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keyferry-settings-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const read = (file: string) => () => readSettingsFile({ KEYFERRY_CONFIG_FILE: file });

  it('a missing file is no login yet', () => {
    expect(read(join(dir, 'none.json'))()).toEqual({});
  });

  it('a directory, or a path through a file, is refused with its error code', () => {
    const directory = join(dir, 'config.d');
    mkdirSync(directory);
    expect(read(directory)).toThrow(
      `cannot read the login file ${directory} (EISDIR): fix it or remove it (keyferry login writes a new one)`,
    );
    const plain = join(dir, 'plain');
    writeFileSync(plain, '');
    expect(read(join(plain, 'config.json'))).toThrow(
      `cannot read the login file ${join(plain, 'config.json')} (ENOTDIR): fix it or remove it (keyferry login writes a new one)`,
    );
  });

  it.each([
    ['{"server": "http://x",', 'is not valid JSON'],
    ['null', 'is not a JSON object'],
    ['["kf_x"]', 'is not a JSON object'],
    ['{"server": 8080}', 'has a server that is not a string (number)'],
    ['{"factory": null}', 'has a factory that is not a string (null)'],
    ['{"token": true}', 'has a token that is not a string (boolean)'],
  ])('%s is refused: %s', (text, what) => {
    const file = join(dir, 'bad.json');
    writeFileSync(file, text);
    expect(read(file)).toThrow(
      `the login file ${file} ${what}: fix it or remove it (keyferry login writes a new one)`,
    );
  });
});

import type * as fs from 'node:fs';
import {
  chmodSync,
  linkSync,
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
import { ApiClient } from '../src/api-client.ts';
import { readSettingsFile, resolveSettings, writeSettingsFile } from '../src/settings.ts';

/**
 * Each write into a file (writeSync on a descriptor, writeFileSync on a path or descriptor),
 * whichever module makes it: what it wrote, and the inode and mode of the real file it went
 * into, read right after it.
 */
const writes = vi.hoisted(() => ({ seen: [] as Array<{ ino: number; mode: number; text: string }> }));
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof fs>();
  const record = (target: fs.PathOrFileDescriptor, text: string) => {
    const stat = typeof target === 'number' ? real.fstatSync(target) : real.statSync(target);
    writes.seen.push({ ino: stat.ino, mode: stat.mode & 0o777, text });
  };
  const textOf = (data: unknown, offset?: unknown, length?: unknown) => {
    if (typeof data === 'string') return data;
    const bytes = Buffer.from((data as ArrayBufferView).buffer, (data as ArrayBufferView).byteOffset);
    const from = typeof offset === 'number' ? offset : 0;
    const to = typeof length === 'number' ? from + length : (data as ArrayBufferView).byteLength;
    return bytes.subarray(from, to).toString('utf8');
  };
  return {
    ...real,
    writeSync: (fd: number, data: unknown, ...rest: unknown[]) => {
      const written = (real.writeSync as (...args: unknown[]) => number)(fd, data, ...rest);
      // a string is written whole or not at all here; a buffer's slice as far as it went
      record(fd, typeof data === 'string' ? data : textOf(data, rest[0], written));
      return written;
    },
    writeFileSync: (target: fs.PathOrFileDescriptor, data: unknown, ...rest: unknown[]) => {
      (real.writeFileSync as (...args: unknown[]) => void)(target, data, ...rest);
      if (typeof target === 'string' || typeof target === 'number') record(target, textOf(data));
    },
  };
});

describe('keyferry login writes the token where only its user can read it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keyferry-settings-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('an existing 0644 config.json ends 0600, and no write ever left the token readable by others (was: written, then chmod)', () => {
    const at = join(dir, 'existing');
    mkdirSync(at);
    const file = join(at, 'config.json');
    writeFileSync(file, '{}\n');
    chmodSync(file, 0o644);
    // the old file's inode, to see afterwards that it never held the token
    const old = join(dir, 'old-config.json');
    linkSync(file, old);
    writes.seen.length = 0;
    expect(
      writeSettingsFile({ server: 'https://k.example', token: 'kf_secret' }, { KEYFERRY_CONFIG_FILE: file }),
    ).toBe(file);
    // the token was written, and every file any write went into was 0600 right after it
    expect(writes.seen.map((w) => w.text).join('')).toContain('kf_secret');
    for (const { ino, mode } of writes.seen)
      expect({ ino, mode: mode.toString(8) }).toEqual({ ino, mode: '600' });
    // into the file that is config.json now, not into the old one
    expect(new Set(writes.seen.map((w) => w.ino))).toEqual(new Set([statSync(file).ino]));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(old, 'utf8')).toBe('{}\n');
    expect(statSync(old).mode & 0o777).toBe(0o644);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual({
      server: 'https://k.example',
      token: 'kf_secret',
    });
    // nothing left beside it
    expect(readdirSync(at)).toEqual(['config.json']);
  });

  it('a directory it makes for the file is 0700', () => {
    const file = join(dir, 'fresh', 'keyferry', 'config.json');
    writeSettingsFile({ token: 'kf_secret' }, { KEYFERRY_CONFIG_FILE: file });
    expect(statSync(join(dir, 'fresh', 'keyferry')).mode & 0o777).toBe(0o700);
    expect(statSync(file).mode & 0o777).toBe(0o600);
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

  it('a login file that cannot be written is refused with its error code, leaving no temp file (was: the raw rename error)', () => {
    const write = (file: string) => () =>
      writeSettingsFile({ server: 'http://127.0.0.1:8080', token: 'kf_x' }, { KEYFERRY_CONFIG_FILE: file });
    const directory = join(dir, 'in-the-way');
    mkdirSync(directory);
    expect(write(directory)).toThrow(
      `cannot write the login file ${directory} (EISDIR): a directory is in its place: remove it, or set KEYFERRY_CONFIG_FILE to another file`,
    );
    const plain = join(dir, 'a-file');
    writeFileSync(plain, '');
    expect(write(join(plain, 'config.json'))).toThrow(
      `cannot write the login file ${join(plain, 'config.json')} (EEXIST): part of its path is a file, not a directory, or set KEYFERRY_CONFIG_FILE to another file`,
    );
    expect(readdirSync(dir).filter((name) => name.endsWith('.tmp'))).toEqual([]);
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

describe('a server URL without a scheme names where it came from', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keyferry-server-from-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const refusal = (env: NodeJS.ProcessEnv, flags: { server?: string } = {}) =>
    new ApiClient(resolveSettings({ token: 'kf_x', ...flags }, env)).call('GET', '/ota/factories/').then(
      () => 'answered',
      (err: Error) => err.message,
    );

  it('a hand-edited login file: the file, not --server or KEYFERRY_SERVER (was: check --server or KEYFERRY_SERVER)', async () => {
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify({ server: '127.0.0.1:8080' }));
    expect(await refusal({ KEYFERRY_CONFIG_FILE: file })).toBe(
      `the server URL "127.0.0.1:8080" needs http:// or https:// in front (e.g. --server http://127.0.0.1:8080): check the login file ${file} (or run keyferry login)`,
    );
  });

  it('KEYFERRY_SERVER, or --server, over the login file', async () => {
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify({ server: 'http://127.0.0.1:1' }));
    expect(await refusal({ KEYFERRY_CONFIG_FILE: file, KEYFERRY_SERVER: 'ftp://h' })).toMatch(
      /must start with http:\/\/ or https:\/\/: check KEYFERRY_SERVER$/,
    );
    expect(
      await refusal({ KEYFERRY_CONFIG_FILE: file, KEYFERRY_SERVER: 'ftp://h' }, { server: 'h:1' }),
    ).toMatch(/needs http:\/\/ or https:\/\/ in front \(e\.g\. --server http:\/\/h:1\): check --server$/);
  });
});

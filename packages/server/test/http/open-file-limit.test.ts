import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.ts';
import { openFileLimit, reportOpenFileLimit } from '../../src/http/open-file-limit.ts';

function captured() {
  const lines: any[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  return { log, lines };
}

describe('open-file limit at start (issue 12 §1: a flood exhausted the descriptors silently)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keyferry-nofile-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const limits = (soft: string, hard: string) => {
    const file = join(dir, `${soft}-${hard}`);
    writeFileSync(
      file,
      `Limit                     Soft Limit           Hard Limit           Units\nMax open files            ${soft}                 ${hard}               files\n`,
    );
    return file;
  };

  it('reads soft and hard RLIMIT_NOFILE from /proc/self/limits', () => {
    expect(openFileLimit(limits('1024', '524288'))).toEqual({ soft: 1024, hard: 524288 });
    expect(openFileLimit(limits('unlimited', 'unlimited'))?.soft).toBe(Number.POSITIVE_INFINITY);
    expect(openFileLimit(join(dir, 'missing'))).toBeUndefined();
  });

  it('warns with the ulimit and LimitNOFILE to set when the connection caps do not fit', () => {
    const { log, lines } = captured();
    reportOpenFileLimit(validateConfig({}), log, { soft: 1024, hard: 524288 });
    expect(lines).toHaveLength(1);
    expect(lines[0].level).toBe(40);
    // defaults: API 256 + device-link 2048 + gateway 2048 + 128 reserved
    expect(lines[0].needed).toBe(4480);
    expect(lines[0].msg).toMatch(/open-file limit 1024 .*ulimit -n 65536 .*LimitNOFILE=65536/);
  });

  it('says the limit at info when it holds every cap', () => {
    const { log, lines } = captured();
    reportOpenFileLimit(validateConfig({}), log, { soft: 65536, hard: 65536 });
    expect(lines[0].level).toBe(30);
    expect(lines[0].openFileLimit).toEqual({ soft: 65536, hard: 65536 });
  });

  it('refuses a headers timeout longer than the request timeout', () => {
    expect(() =>
      validateConfig({ api: { limits: { headersTimeoutMs: 5000, requestTimeoutMs: 1000 } } }),
    ).toThrow(/api\.limits: headersTimeoutMs must not exceed requestTimeoutMs/);
  });
});

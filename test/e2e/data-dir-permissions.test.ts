import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKeyferryd } from '../support/processes.ts';

/** Every entry below `dir` with its permission bits, e.g. `keyferry.db-wal 600`. */
function modes(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    out.push(`${entry.name} ${(statSync(path).mode & 0o777).toString(8)}`);
    if (entry.isDirectory()) out.push(...modes(path).map((m) => `${entry.name}/${m}`));
  }
  return out.sort();
}

describe('keyferryd file permissions', () => {
  let work: string;
  const shellUmask = process.umask();
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-perms-'));
    // the usual login-shell umask, under which SQLite and plain writes make 0644 files
    process.umask(0o022);
  });
  afterAll(() => {
    process.umask(shellUmask);
    rmSync(work, { recursive: true, force: true });
  });

  it('files readable by all: in an existing 0755 data dir every file keyferryd makes is 0600, and it warns about the dir', {
    timeout: 120_000,
  }, async () => {
    const dataDir = join(work, 'shared');
    mkdirSync(dataDir);
    chmodSync(dataDir, 0o755);
    const daemon = await startKeyferryd(dataDir);
    try {
      // a write, so the WAL and its index exist while the daemon runs
      const token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
      const res = await fetch(`${daemon.listen.api}/ota/factories/demo/el2g/device-gateway/`, {
        method: 'POST',
        headers: { 'osf-token': token },
      });
      expect(res.status).toBe(201);
      const running = modes(dataDir);
      for (const name of ['keyferry.db', 'keyferry.db-wal', 'keyferry.db-shm', 'master.key', 'demo.token']) {
        expect(running).toContain(`${name} 600`);
      }
      expect(running.filter((m) => !m.endsWith(' 600'))).toEqual([]);
      expect(statSync(dataDir).mode & 0o777).toBe(0o755); // the operator's dir is not changed
      const warning = daemon
        .stdout()
        .split('\n')
        .filter((l) => l.includes('open to group or others'));
      expect(warning).toHaveLength(1);
      expect(JSON.parse(warning[0]!)).toMatchObject({ level: 40, mode: '0755', dataDir });
      expect(warning[0]).toContain(`run chmod 700 ${dataDir}`);
    } finally {
      await daemon.stop();
    }
    expect(modes(dataDir).filter((m) => !m.endsWith(' 600'))).toEqual([]);
  });

  it('a data dir keyferryd creates is 0700 and gives no warning', { timeout: 120_000 }, async () => {
    const dataDir = join(work, 'fresh', 'data');
    const daemon = await startKeyferryd(dataDir);
    try {
      expect(statSync(dataDir).mode & 0o777).toBe(0o700);
      expect(modes(dataDir).filter((m) => !m.endsWith(' 600'))).toEqual([]);
      expect(daemon.stdout()).not.toContain('open to group or others');
    } finally {
      await daemon.stop();
    }
  });
});

import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { createDatabase } from '../../../../test/support/postgres.ts';
import { BINS, PROCESS_TEST_TIMEOUT_MS, runBinAsync } from '../../../../test/support/processes.ts';
import { openDatabase } from '../../src/storage/database.ts';
import { MIGRATIONS } from '../../src/storage/migrate.ts';

describe('several keyferryd starting at once on one PostgreSQL', () => {
  it('migrates an empty database exactly once, with the lock taken before any DDL', async () => {
    const url = await createDatabase(inject('postgresUrl'), `migrate_race_${process.pid}`);
    // five nodes, each with its own pool, open the fresh database at the same moment
    const opened = await Promise.allSettled(
      Array.from({ length: 5 }, () => openDatabase({ kind: 'postgres', url, poolSize: 2 }, '/nonexistent')),
    );
    const failures = opened.filter((r) => r.status === 'rejected').map((r) => String(r.reason));
    expect(failures).toEqual([]);
    const dbs = opened.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    try {
      const rows = await dbs[0]!.db
        .selectFrom('keyferry_migrations' as never)
        .select('name' as never)
        .execute();
      expect(rows.map((r) => (r as { name: string }).name).sort()).toEqual(
        MIGRATIONS.map((m) => m.name).sort(),
      );
    } finally {
      for (const d of dbs) await d.close();
    }
  });
});

/**
 * The real keyferryd with `config` until it serves (its banner on stdout) or exits; then
 * stopped. Its exit code and stderr.
 */
async function startAndStop(config: string): Promise<{ status: number | null; stderr: string }> {
  const child = spawn(process.execPath, [BINS.keyferryd, '-c', config], {
    env: { ...process.env, KEYFERRY_DEBUG: '', KEYFERRY_MASTER_KEY_FILE: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.once('close', r));
  let signalled = false;
  child.stdout.on('data', (d) => {
    stdout += d;
    // once: a log line while it stops would send a second SIGTERM, which ends keyferryd at once
    if (!signalled && stdout.includes('Management API:')) {
      signalled = true;
      child.kill('SIGTERM');
    }
  });
  return { status: await exited, stderr };
}

describe('several keyferryd processes opening one new SQLite data dir at once', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  it('all start: the schema migrated once, one master key, nothing half-made; admin commands then at once', async () => {
    // a race shows in some rounds only (before the fix: about one round in two)
    for (let round = 0; round < 4; round++) {
      const work = mkdtempSync(join(tmpdir(), 'kf-migrate-race-'));
      const dataDir = join(work, 'data');
      const config = join(work, 'keyferryd.json');
      writeFileSync(
        config,
        JSON.stringify({
          dataDir,
          workers: 1,
          api: { listen: '127.0.0.1:0' },
          deviceLink: { enabled: false },
          gateway: { enabled: false },
          log: { level: 'warn' },
        }),
      );
      try {
        // first starts make the data dir, the database and the master key (admin commands never do)
        const starts = await Promise.all(Array.from({ length: 5 }, () => startAndStop(config)));
        expect(starts.map((s) => s.stderr)).toEqual(starts.map(() => ''));
        expect(starts.map((s) => s.status)).toEqual(starts.map(() => 0));
        expect(readdirSync(dataDir).filter((f) => f.startsWith('master.key'))).toEqual(['master.key']);
        const names = Array.from({ length: 5 }, (_, i) => `race-${round}-${i}`);
        const runs = await Promise.all(
          names.map((name) =>
            runBinAsync('keyferryd', ['-c', config, 'admin', 'factory', 'create', name], {
              env: { KEYFERRY_MASTER_KEY_FILE: '' },
            }),
          ),
        );
        // the hint after a factory's creation, no ERROR
        expect(runs.map((r) => r.stderr.split(' ')[0])).toEqual(names.map(() => 'Next:'));
        expect(runs.map((r) => r.status)).toEqual(names.map(() => 0));
        const { db, close } = await openDatabase({ kind: 'sqlite' }, dataDir);
        try {
          const migrations = await db
            .selectFrom('keyferry_migrations' as never)
            .select('name' as never)
            .execute();
          expect(migrations.map((r) => (r as { name: string }).name).sort()).toEqual(
            MIGRATIONS.map((m) => m.name).sort(),
          );
          const factories = await db.selectFrom('factories').select('name').execute();
          expect(factories.map((f) => f.name).sort()).toEqual(names);
        } finally {
          await close();
        }
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    }
  });
});

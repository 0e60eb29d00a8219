import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { createDatabase } from '../../../../test/support/postgres.ts';
import { PROCESS_TEST_TIMEOUT_MS, runBinAsync } from '../../../../test/support/processes.ts';
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

describe('several keyferryd processes opening one new SQLite data dir at once', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  it('all start: the schema migrated once, one master key, nothing half-made', async () => {
    // a race shows in some rounds only (before the fix: about one round in two)
    for (let round = 0; round < 4; round++) {
      const dataDir = mkdtempSync(join(tmpdir(), 'kf-migrate-race-'));
      try {
        const names = Array.from({ length: 5 }, (_, i) => `race-${round}-${i}`);
        const runs = await Promise.all(
          names.map((name) =>
            runBinAsync('keyferryd', ['admin', 'factory', 'create', name], {
              env: { KEYFERRY_DATA_DIR: dataDir },
            }),
          ),
        );
        // the hint after a factory's creation, no ERROR
        expect(runs.map((r) => r.stderr.split(' ')[0])).toEqual(names.map(() => 'Next:'));
        expect(runs.map((r) => r.status)).toEqual(names.map(() => 0));
        expect(readdirSync(dataDir).filter((f) => f.startsWith('master.key'))).toEqual(['master.key']);
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
        rmSync(dataDir, { recursive: true, force: true });
      }
    }
  });
});

import { describe, expect, inject, it } from 'vitest';
import { createDatabase } from '../../../../test/support/postgres.ts';
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

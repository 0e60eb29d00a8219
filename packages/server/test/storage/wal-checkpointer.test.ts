import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { type Database, openDatabase } from '../../src/storage/database.ts';
import { FALLBACK_CHECKPOINT_PAGES, startWalCheckpointer } from '../../src/storage/wal-checkpointer.ts';

const log = pino({ level: 'silent' });

/**
 * keyferryd's SQLite connections leave the WAL's checkpoints to a thread of their own
 * (wal-checkpointer.ts), so no request's COMMIT copies pages and fsyncs on the event loop.
 */
describe('the WAL checkpointer', () => {
  let dir: string;
  let database: Database | undefined;
  afterEach(async () => {
    await database?.close();
    database = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  const open = async (backgroundCheckpoints: boolean) => {
    dir = mkdtempSync(join(tmpdir(), 'keyferry-wal-'));
    database = await openDatabase({ kind: 'sqlite', path: join(dir, 'keyferry.db') }, dir, {
      backgroundCheckpoints,
    });
    await sql`CREATE TABLE filler (id integer PRIMARY KEY, blob blob)`.execute(database.db);
    return database;
  };
  /** ~3,000 pages in 300 commits: past SQLite's own 1,000-page checkpoint, short of the fallback. */
  const write = async (db: Database) => {
    for (let i = 0; i < 300; i++)
      await sql`INSERT INTO filler (blob) VALUES (zeroblob(40000))`.execute(db.db);
  };
  const size = (file: string) => statSync(join(dir, file)).size;
  const MB = 1024 * 1024;

  it('leaves the checkpoints to the thread: commits do not copy the WAL back themselves', async () => {
    expect(FALLBACK_CHECKPOINT_PAGES * 4096).toBeGreaterThan(3_000 * 4096 * 2);
    const inline = await open(false);
    await write(inline);
    // SQLite's own checkpoint ran in a commit: the database file holds the rows
    expect(size('keyferry.db')).toBeGreaterThan(8 * MB);
    await inline.close();
    database = undefined;
    rmSync(dir, { recursive: true, force: true });

    const left = await open(true);
    await write(left);
    expect(size('keyferry.db')).toBeLessThan(1 * MB);
    expect(size('keyferry.db-wal')).toBeGreaterThan(11 * MB);
  });

  it('checkpoints on its own thread while the connection writes, and stops', async () => {
    const db = await open(true);
    const stop = await startWalCheckpointer(join(dir, 'keyferry.db'), log, { intervalMs: 20 });
    try {
      await write(db);
      // the thread copies the WAL into the database file within a few of its intervals
      for (let i = 0; i < 500 && size('keyferry.db') < 11 * MB; i++)
        await new Promise((resolve) => setTimeout(resolve, 20));
      expect(size('keyferry.db')).toBeGreaterThan(11 * MB);
    } finally {
      await stop();
    }
    await stop(); // a second stop is harmless
    const { rows } = await sql<{ n: number }>`SELECT count(*) AS n FROM filler`.execute(db.db);
    expect(rows[0]?.n).toBe(300);
  });

  it('refuses to start on a database that is not there, naming it', async () => {
    dir = mkdtempSync(join(tmpdir(), 'keyferry-wal-'));
    await expect(startWalCheckpointer(join(dir, 'missing.db'), log)).rejects.toThrow(
      /the WAL checkpointer cannot open the database .*missing.db: unable to open database file/,
    );
  });

  it('refuses to start, not waits forever, when its thread ends before it says it is ready', async () => {
    dir = mkdtempSync(join(tmpdir(), 'keyferry-wal-'));
    const script = new URL('./fixtures/silent-thread.mjs', import.meta.url);
    await expect(startWalCheckpointer(join(dir, 'keyferry.db'), log, { script })).rejects.toThrow(
      /the WAL checkpointer cannot open the database .*keyferry.db: its thread exited \(exit code 4\) before it said it was ready/,
    );
  });
});

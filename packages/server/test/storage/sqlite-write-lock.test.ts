import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/storage/database.ts';

const work = mkdtempSync(join(tmpdir(), 'keyferry-sqlite-lock-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/**
 * Another process writing the same SQLite file, as a second worker does (`workers: 2`): it
 * commits a small write every millisecond or so for `ms` milliseconds, then exits.
 */
function otherWriter(file: string, ms: number) {
  const betterSqlite = createRequire(import.meta.url).resolve('better-sqlite3');
  const child = spawn(
    process.execPath,
    [
      '-e',
      `const db = new (require(${JSON.stringify(betterSqlite)}))(${JSON.stringify(file)});
       db.pragma('busy_timeout = 5000');
       const insert = db.prepare('INSERT INTO churn (x) VALUES (?)');
       const end = Date.now() + ${ms};
       let n = 0;
       const step = () => { insert.run(n++); if (Date.now() < end) setTimeout(step, 1); else console.log(n); };
       step();`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  return new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve(Number(out.trim())) : reject(new Error(`writer exited ${code}`)),
    );
  });
}

describe('SQLite transactions with another process writing the file (workers: N)', () => {
  it('wait for the write lock instead of failing with "database is locked" after reading', async () => {
    const file = join(work, 'keyferry.db');
    const { db, close } = await openDatabase({ kind: 'sqlite', path: file }, work);
    try {
      await sql`CREATE TABLE churn (x INTEGER)`.execute(db);
      const writer = otherWriter(file, 1500);
      let done = false;
      void writer.finally(() => (done = true));
      const errors: string[] = [];
      let transactions = 0;
      while (!done) {
        // read, let the other process commit, then write: a deferred BEGIN cannot upgrade now
        await db
          .transaction()
          .execute(async (trx) => {
            const { rows } = await sql<{ n: number }>`SELECT count(*) AS n FROM churn`.execute(trx);
            await new Promise((r) => setTimeout(r, 1));
            await sql`INSERT INTO churn (x) VALUES (${-(rows[0]?.n ?? 0)})`.execute(trx);
          })
          .then(
            () => transactions++,
            (e: Error) => errors.push(e.message),
          );
        // and leave the lock free a while, as a worker between requests does
        await new Promise((r) => setTimeout(r, 2));
      }
      const written = await writer;
      expect(errors.slice(0, 3)).toEqual([]);
      // both sides really wrote while the other did: the test could have failed
      expect(written).toBeGreaterThan(10);
      expect(transactions).toBeGreaterThan(10);
    } finally {
      await close();
    }
  });
});

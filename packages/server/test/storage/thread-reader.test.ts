import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CompiledQuery, sql } from 'kysely';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { type Database, openDatabase, threadReaderOf } from '../../src/storage/database.ts';
import { recordStatementTexts } from '../../src/storage/statement-count.ts';
import { ThreadReader } from '../../src/storage/thread-reader.ts';

/**
 * Long reads of keyferryd's SQLite database run on a thread of their own (thread-reader.ts),
 * the rows coming back packed by column: what they give must be what the connection gives.
 */
describe('the thread reader', () => {
  let dir: string;
  let database: Database | undefined;
  afterEach(async () => {
    await database?.close();
    database = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  const open = async (threadReads = true) => {
    dir = mkdtempSync(join(tmpdir(), 'keyferry-reader-'));
    database = await openDatabase({ kind: 'sqlite', path: join(dir, 'keyferry.db') }, dir, { threadReads });
    await sql`CREATE TABLE sample (id integer PRIMARY KEY, t text, n real, b blob, m)`.execute(database.db);
    return database;
  };
  const reader = (db: Database) => {
    const found = threadReaderOf(db.db);
    if (!found) throw new Error('no thread reader');
    return found;
  };
  /** The rows of `text` as the connection itself reads them, and as the thread does. */
  const both = async (db: Database, text: string, parameters: unknown[] = []) => {
    const query = CompiledQuery.raw(text, parameters);
    const own = (await db.db.executeQuery<Record<string, unknown>>(query)).rows;
    const read = await reader(db).read(query);
    const names = own[0] ? Object.keys(own[0]) : [];
    const fromThread = Array.from({ length: read.count }, (_, i) =>
      Object.fromEntries(names.map((name) => [name, read.column(name).at(i)])),
    );
    return { own, fromThread };
  };

  it('reads what the connection reads: text, numbers, NULLs, blobs and mixed columns, in order', async () => {
    const db = await open();
    const values: Array<[string | null, number | null, Buffer | null, unknown]> = [
      ['0a1f', 1.5, Buffer.from([1, 2]), 'text'],
      ['', null, null, 7],
      [null, -3, Buffer.alloc(0), null],
      ['Grüße 🔑\nzwei Zeilen\u0000nul', 2 ** 53 - 1, null, Buffer.from('x')],
    ];
    for (let i = 0; i < 300; i++) {
      const [t, n, b, m] = values[i % values.length]!;
      await sql`INSERT INTO sample (t, n, b, m) VALUES (${t === null ? null : `${t}${i}`}, ${n}, ${b}, ${m})`.execute(
        db.db,
      );
    }
    const { own, fromThread } = await both(
      db,
      'SELECT id, t, n, b, m FROM sample WHERE id > ? ORDER BY id DESC',
      [5],
    );
    expect(own).toHaveLength(295);
    expect(fromThread).toEqual(own);
    // the blobs come back as Buffers, as from the connection
    const blobs = fromThread.flatMap((row) => [row.b, row.m]).filter((v) => v instanceof Uint8Array);
    expect(blobs.length).toBeGreaterThan(100);
    for (const blob of blobs) expect(Buffer.isBuffer(blob)).toBe(true);
  });

  it('reads no rows, and sees what the connection committed before the read', async () => {
    const db = await open();
    const none = await reader(db).read(CompiledQuery.raw('SELECT t FROM sample', []));
    expect(none.count).toBe(0);
    await sql`INSERT INTO sample (t) VALUES ('committed')`.execute(db.db);
    const read = await reader(db).read(CompiledQuery.raw('SELECT t FROM sample', []));
    expect(read.count).toBe(1);
    expect(read.column('t').at(0)).toBe('committed');
    expect(() => read.column('nope')).toThrow('the rows read have no column nope');
  });

  it('counts its statements with the connection’s, for the metric and the plan checks', async () => {
    const db = await open();
    const recorded = recordStatementTexts();
    await reader(db).read(CompiledQuery.raw('SELECT t FROM sample WHERE id = ?', [1]));
    expect(recorded()).toContain('SELECT t FROM sample WHERE id = ?');
  });

  it('refuses a statement that writes or does not parse, naming why, and reads on after it', async () => {
    const db = await open();
    await expect(
      reader(db).read(CompiledQuery.raw("INSERT INTO sample (t) VALUES ('x')", [])),
    ).rejects.toThrow('a thread reader runs statements that only read');
    await expect(reader(db).read(CompiledQuery.raw('SELECT x FROM nowhere', []))).rejects.toThrow(
      'no such table: nowhere',
    );
    const { rows } = await sql<{ n: number }>`SELECT count(*) AS n FROM sample`.execute(db.db);
    expect(rows[0]?.n).toBe(0);
    expect((await reader(db).read(CompiledQuery.raw('SELECT 1 AS one', []))).column('one').at(0)).toBe(1);
  });

  it('is there only for SQLite on a file opened with threadReads, and ends with the database', async () => {
    const without = await open(false);
    expect(threadReaderOf(without.db)).toBeUndefined();
    await without.close();
    database = undefined;
    rmSync(dir, { recursive: true, force: true });
    const memory = await openDatabase({ kind: 'sqlite', path: ':memory:' }, tmpdir(), { threadReads: true });
    expect(threadReaderOf(memory.db)).toBeUndefined();
    await memory.close();

    const db = await open();
    const found = reader(db);
    await found.read(CompiledQuery.raw('SELECT 1', []));
    await db.close();
    database = undefined;
    expect(threadReaderOf(db.db)).toBeUndefined();
    await expect(found.read(CompiledQuery.raw('SELECT 1', []))).rejects.toThrow(
      'this thread reader is closed',
    );
    await found.close(); // a second close is harmless
  });

  it('refuses the reads in flight of a thread that stops, says so once, and still closes', async () => {
    const db = await open();
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) });
    const dying = new ThreadReader(
      join(dir, 'keyferry.db'),
      log,
      new URL('./fixtures/dying-thread-reader.mjs', import.meta.url),
    );
    await expect(dying.read(CompiledQuery.raw('SELECT 1', []))).rejects.toThrow(
      'the thread reader stopped (exit code 3)',
    );
    expect(dying.usable).toBe(false);
    // a read after it is refused the same way, not left waiting on a thread that is gone
    await expect(dying.read(CompiledQuery.raw('SELECT 1', []))).rejects.toThrow(
      'the thread reader stopped (exit code 3)',
    );
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!).msg).toBe(
      'the thread reader stopped (exit code 3); long reads run on the event loop from now on',
    );
    // closing a thread that is gone returns at once
    await dying.close();
    expect(threadReaderOf(db.db)?.usable).toBe(true);
  });

  it('refuses a read, not leaves it waiting, when its thread ends before it says it is ready', async () => {
    dir = mkdtempSync(join(tmpdir(), 'keyferry-reader-'));
    const silent = new ThreadReader(
      join(dir, 'keyferry.db'),
      undefined,
      new URL('./fixtures/silent-thread.mjs', import.meta.url),
    );
    await expect(silent.read(CompiledQuery.raw('SELECT 1', []))).rejects.toThrow(
      /cannot open the database .*keyferry.db: its thread exited \(exit code 4\) before it said it was ready/,
    );
    expect(silent.usable).toBe(false);
    await silent.close();
  });

  it('gives up on a database it cannot open, naming it, and is not used again', async () => {
    dir = mkdtempSync(join(tmpdir(), 'keyferry-reader-'));
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) });
    const missing = new ThreadReader(join(dir, 'missing.db'), log);
    for (let i = 0; i < 2; i++)
      await expect(missing.read(CompiledQuery.raw('SELECT 1', []))).rejects.toThrow(
        /the thread reader cannot open the database .*missing.db: unable to open database file/,
      );
    expect(missing.usable).toBe(false);
    // said once, with what happens instead
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!).msg).toMatch(
      /cannot open the database .*missing.db: .*; long reads run on the event loop from now on$/,
    );
    await missing.close();
  });
});

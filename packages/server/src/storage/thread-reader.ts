import { Worker } from 'node:worker_threads';
import type { CompiledQuery } from 'kysely';
import type { Logger } from 'pino';
import { countStatement } from './statement-count.ts';
import { firstMessage } from './thread-start.ts';

/**
 * One column of the rows a {@link ThreadReader} read: `at(i)` is row i's value, as the
 * connection would have given it (a string, a number, null; anything else as it came).
 */
export interface ReadColumn {
  at(i: number): unknown;
}

/** The rows a {@link ThreadReader} read, by column name. */
export interface ReadRows {
  count: number;
  column(name: string): ReadColumn;
}

type PackedColumn =
  | { kind: 'text'; text: string; ends: Uint32Array; nulls?: Uint8Array }
  | { kind: 'number'; values: Float64Array; nulls?: Uint8Array }
  | { kind: 'values'; values: unknown[] };

type Answer =
  | { id: number; type: 'rows'; count: number; columns: Record<string, PackedColumn> }
  | { id: number; type: 'error'; message: string };

/**
 * How long a read waits for a lock, as keyferryd's own connection does (SQLITE_LOCK_WAIT_MS):
 * here in SQLite's busy handler, whose sleeps hold only this thread.
 */
const BUSY_TIMEOUT_MS = 5000;

/**
 * Runs SELECTs on a SQLite database on a thread of its own, with its own connection
 * (thread-reader-worker.mjs): for reads so long that running them on the event loop would hold
 * every request up meanwhile, such as the listing of a CA's CRL at fleet scale (~50 ms for
 * 60,000 rows, most of it making an object of each row; docs/performance.md). The rows come back
 * packed by column, so the event loop copies a few buffers, not an object per row.
 *
 * A read sees what was committed when it began, like a read of a second process: never the
 * writes of a transaction still open on another connection, so a caller inside a transaction
 * reads on that transaction instead. The thread starts at the first read and ends with
 * {@link close}; while no read is in flight it does not keep the process alive. A thread that
 * cannot start or that stops is reported once and not started again: {@link usable} turns false
 * and callers read on their own connection.
 */
export class ThreadReader {
  readonly #path: string;
  readonly #log: Logger | undefined;
  readonly #script: URL;
  #worker: Promise<Worker> | undefined;
  /** Settles when the started thread has exited, whenever that was. */
  #exited: Promise<void> | undefined;
  /** Why the thread is not usable, once it could not start or stopped. */
  #failure: string | undefined;
  #closed = false;
  #nextId = 0;
  readonly #pending = new Map<number, { resolve: (rows: ReadRows) => void; reject: (e: Error) => void }>();

  /** `script`: the thread's program, thread-reader-worker.mjs unless a test gives another. */
  constructor(path: string, log?: Logger, script = new URL('./thread-reader-worker.mjs', import.meta.url)) {
    this.#path = path;
    this.#log = log;
    this.#script = script;
  }

  /** False once the thread could not start or stopped, or after {@link close}. */
  get usable(): boolean {
    return this.#failure === undefined && !this.#closed;
  }

  /** The rows of `query`, a statement that only reads, read on the thread. */
  async read(query: CompiledQuery): Promise<ReadRows> {
    this.#refuseIfUnusable();
    this.#worker ??= this.#start();
    const worker = await this.#worker;
    // a thread that stopped keeps its Worker, which would never answer
    this.#refuseIfUnusable();
    const id = ++this.#nextId;
    const rows = new Promise<ReadRows>((resolve, reject) => this.#pending.set(id, { resolve, reject }));
    if (this.#pending.size === 1) worker.ref();
    countStatement(query.sql);
    worker.postMessage({ id, sql: query.sql, parameters: query.parameters });
    return rows;
  }

  #refuseIfUnusable(): void {
    if (this.#closed) throw new Error('this thread reader is closed');
    if (this.#failure !== undefined) throw new Error(this.#failure);
  }

  /** Ends the thread (reads in flight are refused); a second close is harmless. */
  async close(): Promise<void> {
    this.#closed = true;
    const started = this.#worker;
    this.#worker = undefined;
    const worker = await started?.catch(() => undefined);
    if (!worker || !this.#exited) return;
    worker.postMessage('stop');
    const timeout = setTimeout(() => void worker.terminate(), 5_000);
    await this.#exited;
    clearTimeout(timeout);
  }

  async #start(): Promise<Worker> {
    const worker = new Worker(this.#script, {
      workerData: { path: this.#path, busyTimeoutMs: BUSY_TIMEOUT_MS },
    });
    const first = await firstMessage(worker).catch((err: unknown) => ({
      type: 'failed',
      message: err instanceof Error ? err.message : String(err),
    }));
    if (first.type !== 'ready') {
      const why = `the thread reader cannot open the database ${this.#path}: ${first.message}`;
      this.#fail(why);
      await worker.terminate();
      throw new Error(why);
    }
    worker.unref();
    worker.on('message', (answer: Answer) => this.#answer(worker, answer));
    worker.on('error', (err) => this.#fail(`the thread reader stopped: ${err.message}`));
    this.#exited = new Promise<void>((resolve) =>
      worker.once('exit', (code) => {
        if (!this.#closed) this.#fail(`the thread reader stopped (exit code ${code})`);
        else this.#refuseAll(new Error('this thread reader is closed'));
        resolve();
      }),
    );
    return worker;
  }

  #answer(worker: Worker, answer: Answer): void {
    const waiting = this.#pending.get(answer.id);
    if (!waiting) return;
    this.#pending.delete(answer.id);
    if (this.#pending.size === 0) worker.unref();
    if (answer.type === 'error') waiting.reject(new Error(answer.message));
    else waiting.resolve(unpack(answer.count, answer.columns));
  }

  #fail(message: string): void {
    if (this.#failure === undefined && !this.#closed)
      this.#log?.warn({ database: this.#path }, `${message}; long reads run on the event loop from now on`);
    this.#failure ??= message;
    this.#refuseAll(new Error(message));
  }

  #refuseAll(error: Error): void {
    for (const waiting of this.#pending.values()) waiting.reject(error);
    this.#pending.clear();
  }
}

function unpack(count: number, columns: Record<string, PackedColumn>): ReadRows {
  return {
    count,
    column(name) {
      const packed = columns[name];
      if (!packed) throw new Error(`the rows read have no column ${name}`);
      return columnOf(packed);
    },
  };
}

function columnOf(packed: PackedColumn): ReadColumn {
  switch (packed.kind) {
    case 'text': {
      const { text, ends, nulls } = packed;
      return { at: (i) => (nulls?.[i] ? null : text.slice(i === 0 ? 0 : ends[i - 1], ends[i])) };
    }
    case 'number': {
      const { values, nulls } = packed;
      return { at: (i) => (nulls?.[i] ? null : values[i]) };
    }
    case 'values':
      // a blob crosses the threads as a Uint8Array; the connection gives a Buffer
      return {
        at: (i) => {
          const value = packed.values[i];
          return value instanceof Uint8Array
            ? Buffer.from(value.buffer, value.byteOffset, value.length)
            : value;
        },
      };
  }
}

import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { firstMessage } from './thread-start.ts';

/**
 * SQLite's WAL is copied back into the database file by a checkpoint, which by default the
 * connection that commits runs itself once the WAL holds 1,000 pages: inside that COMMIT, on the
 * event loop, with two fsyncs (synchronous = NORMAL). Under load that was one commit in ~90 and
 * ~5 ms each on the bench's machine (docs/performance.md), every connection of the process
 * waiting; on a slower disk longer. keyferryd checkpoints on a thread of its own instead, every
 * CHECKPOINT_INTERVAL_MS, and its connections checkpoint themselves only past
 * FALLBACK_CHECKPOINT_PAGES, should that thread fall behind or be gone.
 */
export const CHECKPOINT_INTERVAL_MS = 500;
/** wal_autocheckpoint of keyferryd's connections while the checkpointer runs (~40 MB of WAL). */
export const FALLBACK_CHECKPOINT_PAGES = 10_000;

/** Starts the checkpointer thread on the SQLite database at `path`; resolves to its stop. */
export async function startWalCheckpointer(
  path: string,
  log: Logger,
  options: { intervalMs?: number; script?: URL } = {},
): Promise<() => Promise<void>> {
  // `script`: the thread's program, wal-checkpoint-worker.mjs unless a test gives another
  const worker = new Worker(options.script ?? new URL('./wal-checkpoint-worker.mjs', import.meta.url), {
    workerData: { path, intervalMs: options.intervalMs ?? CHECKPOINT_INTERVAL_MS },
  });
  // a thread that cannot start (its module, its connection) fails keyferryd's start
  const first = await firstMessage(worker).catch((err: Error) => ({ type: 'failed', message: err.message }));
  if (first.type !== 'ready')
    throw new Error(`the WAL checkpointer cannot open the database ${path}: ${first.message}`);
  let failures = 0;
  worker.on('message', (message: { type: string; message: string }) => {
    // once, then every hundredth: a checkpoint that keeps failing must not flood the log
    if (message.type === 'error' && failures++ % 100 === 0)
      log.warn(
        { err: message.message, failures },
        `WAL checkpoint failed; commits checkpoint themselves past ${FALLBACK_CHECKPOINT_PAGES} pages of WAL`,
      );
  });
  // a plain promise: events.once would reject on the worker's 'error', which is logged instead
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  worker.on('error', (err) =>
    log.error(
      { err },
      `the WAL checkpointer stopped; commits checkpoint themselves past ${FALLBACK_CHECKPOINT_PAGES} pages of WAL`,
    ),
  );
  return async () => {
    worker.postMessage('stop');
    const timeout = setTimeout(() => void worker.terminate(), 5_000);
    await exited;
    clearTimeout(timeout);
  };
}

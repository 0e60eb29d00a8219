// The WAL checkpointer's thread (wal-checkpointer.ts): its own connection to the database,
// checkpointing every `intervalMs` without blocking the writers (PASSIVE), so the checkpoint's
// copying and fsyncs never run on a request's event loop. Plain JavaScript: it runs as it is,
// built or not.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

const messageOf = (error) => (error instanceof Error ? error.message : String(error));

function open() {
  try {
    // a PASSIVE checkpoint waits for no lock, so the connection needs no busy timeout
    return new Database(workerData.path, { fileMustExist: true });
  } catch (error) {
    parentPort.postMessage({ type: 'failed', message: messageOf(error) });
    parentPort.close();
    return undefined;
  }
}

const db = open();
if (db) {
  const timer = setInterval(() => {
    try {
      db.pragma('wal_checkpoint(PASSIVE)');
    } catch (error) {
      parentPort.postMessage({ type: 'error', message: messageOf(error) });
    }
  }, workerData.intervalMs);
  parentPort.on('message', (message) => {
    if (message !== 'stop') return;
    clearInterval(timer);
    db.close();
    parentPort.close();
  });
  parentPort.postMessage({ type: 'ready' });
}

// The thread of a ThreadReader (thread-reader.ts): its own connection to the database, running
// the SELECTs it is sent and answering with their rows packed by column: a text column as one
// string and the end of each value, a number column as a Float64Array, so the event loop that
// asked copies a few buffers, not an object per row. Plain JavaScript: it runs as it is, built
// or not.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

/** Prepared statements kept, by SQL text. */
const MAX_STATEMENTS = 64;

const messageOf = (error) => (error instanceof Error ? error.message : String(error));

function open() {
  try {
    const db = new Database(workerData.path, { fileMustExist: true });
    // a read waits for a lock only while another connection recovers the WAL
    db.pragma(`busy_timeout = ${workerData.busyTimeoutMs}`);
    return db;
  } catch (error) {
    parentPort.postMessage({ type: 'failed', message: messageOf(error) });
    parentPort.close();
    return undefined;
  }
}

/**
 * Column `j` of `rows` (arrays, one per row): `text` when every value is a string or NULL,
 * `number` when every value is a number or NULL, else the values as they are.
 */
function packColumn(rows, j, transfer) {
  const n = rows.length;
  let strings = true;
  let numbers = true;
  let nulls;
  for (let i = 0; i < n; i++) {
    const value = rows[i][j];
    if (value === null) {
      nulls ??= new Uint8Array(n);
      nulls[i] = 1;
    } else if (typeof value === 'string') numbers = false;
    else if (typeof value === 'number') strings = false;
    else strings = numbers = false;
  }
  if (nulls) transfer.push(nulls.buffer);
  if (strings) {
    const parts = new Array(n);
    const ends = new Uint32Array(n);
    let end = 0;
    for (let i = 0; i < n; i++) {
      const value = rows[i][j] ?? '';
      parts[i] = value;
      end += value.length;
      ends[i] = end;
    }
    transfer.push(ends.buffer);
    return { kind: 'text', text: parts.join(''), ends, nulls };
  }
  if (numbers) {
    const values = new Float64Array(n);
    for (let i = 0; i < n; i++) values[i] = rows[i][j] ?? 0;
    transfer.push(values.buffer);
    return { kind: 'number', values, nulls };
  }
  return { kind: 'values', values: rows.map((row) => row[j]) };
}

const db = open();
if (db) {
  const statements = new Map();
  parentPort.on('message', (message) => {
    if (message === 'stop') {
      db.close();
      parentPort.close();
      return;
    }
    const { id, sql, parameters } = message;
    try {
      let statement = statements.get(sql);
      if (!statement) {
        // a few distinct texts are sent (the CRL listing today); a bound all the same
        if (statements.size >= MAX_STATEMENTS) statements.clear();
        statement = db.prepare(sql);
        if (!statement.readonly) throw new Error('a thread reader runs statements that only read');
        statement.raw(true);
        statements.set(sql, statement);
      }
      const rows = statement.all(...parameters);
      const transfer = [];
      const columns = {};
      statement.columns().forEach((column, j) => {
        columns[column.name] = packColumn(rows, j, transfer);
      });
      parentPort.postMessage({ id, type: 'rows', count: rows.length, columns }, transfer);
    } catch (error) {
      parentPort.postMessage({ id, type: 'error', message: messageOf(error) });
    }
  });
  parentPort.postMessage({ type: 'ready' });
}

import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, openSync, readSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { CliError } from './cli-error.ts';

/**
 * fioctl-shaped tables: each column padded with spaces to its widest cell + 2, a row of
 * dashes under every header as long as the header, and an optional prefix (fioctl put one
 * TAB before every table line in `el2g status` and `devices show`).
 */
export function formatTable(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
  prefix = '',
): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    prefix +
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd((widths[i] ?? 0) + 2)))
      .join('')
      .trimEnd();
  return [line(headers), line(headers.map((h) => '-'.repeat(h.length))), ...rows.map(line)].join('\n') + '\n';
}

export interface Output {
  json: boolean;
  write(text: string | Uint8Array): void;
  error(text: string): void;
  /** Resolves once what was written has left (stdout may be a slow pipe). */
  drained(): Promise<void>;
}

export function processOutput(json: boolean): Output {
  return {
    json,
    write: (text) => process.stdout.write(text),
    error: (text) => process.stderr.write(text),
    drained: () =>
      process.stdout.writableNeedDrain ? once(process.stdout, 'drain').then(() => {}) : Promise.resolve(),
  };
}

/** How much of a {@link Spool} is read back at a time. */
const SPOOL_CHUNK = 64 * 1024;

/**
 * Output held back until it is known complete: a listing read page by page goes to a temp file
 * (removed from its directory as soon as it is open, so nothing stays behind, even after a
 * kill) and is copied to stdout only once the last page came. A page that fails then leaves
 * stdout empty rather than cut-off JSON, and memory stays flat however long the listing.
 */
export class Spool {
  readonly #fd: number;
  #path: string | undefined;
  #size = 0;

  constructor() {
    const path = join(tmpdir(), `keyferry-${randomUUID()}.spool`);
    try {
      this.#fd = openSync(path, 'wx+', 0o600);
    } catch (err) {
      throw new CliError(
        `cannot create a temp file in ${tmpdir()} to hold the listing until its last page came (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): set TMPDIR to a writable directory`,
      );
    }
    try {
      unlinkSync(path);
    } catch {
      this.#path = path; // removed on close instead
    }
  }

  write(text: string): void {
    const bytes = Buffer.from(text);
    for (let done = 0; done < bytes.length; ) {
      done += writeSync(this.#fd, bytes, done, bytes.length - done, this.#size + done);
    }
    this.#size += bytes.length;
  }

  /** Copies everything written to `out`, a chunk at a time. */
  async copyTo(out: Output): Promise<void> {
    const chunk = Buffer.alloc(SPOOL_CHUNK);
    for (let at = 0; at < this.#size; ) {
      const n = readSync(this.#fd, chunk, 0, Math.min(SPOOL_CHUNK, this.#size - at), at);
      if (n === 0) break;
      // stdout keeps the buffer it is handed until it is written: each chunk its own copy
      out.write(Buffer.from(chunk.subarray(0, n)));
      await out.drained();
      at += n;
    }
  }

  /**
   * Copies everything written to `out` a line at a time, each line (without its newline) through
   * `format`: the second pass over a listing whose column widths the first pass found.
   */
  async copyLinesTo(out: Output, format: (line: string) => string): Promise<void> {
    const chunk = Buffer.alloc(SPOOL_CHUNK);
    // a chunk may end inside a character or a line: both wait for the next chunk
    const decoder = new StringDecoder('utf8');
    let rest = '';
    for (let at = 0; at < this.#size; ) {
      const n = readSync(this.#fd, chunk, 0, Math.min(SPOOL_CHUNK, this.#size - at), at);
      if (n === 0) break;
      at += n;
      const lines = (rest + decoder.write(chunk.subarray(0, n))).split('\n');
      rest = lines.pop() ?? '';
      if (lines.length === 0) continue;
      out.write(lines.map(format).join(''));
      await out.drained();
    }
    rest += decoder.end();
    if (rest !== '') out.write(format(rest));
  }

  close(): void {
    closeSync(this.#fd);
    if (this.#path !== undefined) rmSync(this.#path, { force: true });
  }
}

export function printJson(out: Output, value: unknown): void {
  out.write(JSON.stringify(value, null, 2) + '\n');
}

/** A one-line progress printer that stays quiet under --json. */
export function stepPrinter(out: Output): (line: string) => void {
  return (line) => {
    if (!out.json) out.write(`${line}\n`);
  };
}

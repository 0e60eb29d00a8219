import { parse } from 'csv-parse/sync';
import { DEVICE_ID_FORMS, deviceIdProblem, tryParseDeviceId } from './device-id.ts';
import { KeyferryError } from './errors.ts';

/** A device id read from a file, with the line it came from (1-based). */
export interface FileId {
  line: number;
  text: string;
  decimal: string;
}

export interface IdFile {
  ids: FileId[];
  /** Values that are not device ids, with the line their row starts on and what is wrong. */
  invalid: Array<{ line: number; text: string; reason: string }>;
  /** Later lines repeating an id (in either form) of an earlier line; sent once. */
  duplicates: Array<{ line: number; firstLine: number }>;
  format: 'lines' | 'csv';
}

/** Largest id file read (50 MB is over a million ids). */
export const MAX_ID_FILE_BYTES = 50 * 1024 * 1024;

/** One value of the file and the line it starts on. */
interface Row {
  line: number;
  value: string;
}

/**
 * Reads an id file: one id a line, or CSV whose header row has an `id` column. A UTF-8 BOM and
 * CRLF line ends are accepted, blank lines skipped, spaces around a value ignored. CSV is read
 * by a CSV parser (RFC 4180: a quoted cell may hold commas, quotes and newlines), so a row's
 * line number is the line it starts on. A file that is empty, not text or not well-formed CSV
 * is refused as a whole; bad ids are collected with their line numbers. The CLI (`devices add
 * --file`) and the web console's import read files with this one parser.
 */
export function parseIdFile(name: string, bytes: Uint8Array): IdFile {
  if (bytes.length > MAX_ID_FILE_BYTES) {
    throw new KeyferryError(
      'invalid_request',
      `${name} has ${bytes.length} bytes; at most ${MAX_ID_FILE_BYTES}: split it`,
    );
  }
  // One line end, so a CRLF inside a quoted cell counts as one line like every other
  const text = decodeText(name, bytes)
    .replace(/^\uFEFF/, '')
    .replace(/\r\n/g, '\n');
  const lines = text.split('\n');
  const first = lines.findIndex((l) => l.trim() !== '');
  if (first < 0) {
    throw new KeyferryError(
      'invalid_request',
      `${name} is empty: put one device id a line (${DEVICE_ID_FORMS}), or a CSV with an id column`,
    );
  }
  const idColumn = csvHeader(lines[first]!).indexOf('id');
  const csv = idColumn >= 0;
  const rows = csv ? csvRows(name, text, idColumn) : plainRows(lines, first);
  const out: IdFile = { ids: [], invalid: [], duplicates: [], format: csv ? 'csv' : 'lines' };
  const seen = new Map<string, number>();
  for (const { line, value } of rows) {
    const id = tryParseDeviceId(value);
    if (!id) {
      out.invalid.push({ line, text: value, reason: deviceIdProblem(value) ?? '' });
      continue;
    }
    const earlier = seen.get(id.decimal);
    if (earlier !== undefined) {
      out.duplicates.push({ line, firstLine: earlier });
      continue;
    }
    seen.set(id.decimal, line);
    out.ids.push({ line, text: value, decimal: id.decimal });
  }
  if (csv && out.ids.length + out.invalid.length + out.duplicates.length === 0) {
    throw new KeyferryError(
      'invalid_request',
      `${name} has an id column but no rows: add one device id a row`,
    );
  }
  return out;
}

/** The cells of a first line, lower-cased: a CSV header when one of them is `id`. */
function csvHeader(line: string): string[] {
  try {
    const [cells] = parse(line, { relax_quotes: true, relax_column_count: true }) as string[][];
    return (cells ?? []).map((c) => c.trim().toLowerCase());
  } catch {
    return []; // not CSV-shaped (a stray quote): a plain list of ids
  }
}

function plainRows(lines: readonly string[], first: number): Row[] {
  const rows: Row[] = [];
  for (let i = first; i < lines.length; i++) {
    const value = lines[i]!.trim();
    if (value !== '') rows.push({ line: i + 1, value });
  }
  return rows;
}

/** Rows after the header, each with the line it starts on (its end line less its cells' newlines). */
function csvRows(name: string, text: string, idColumn: number): Row[] {
  const rows: Row[] = [];
  let header = true;
  const collect = (record: string[], { lines }: { lines: number }) => {
    if (record.length === 1 && record[0]!.trim() === '') return null; // a line of spaces
    if (header) header = false;
    else {
      const breaks = record.reduce((n, cell) => n + cell.split('\n').length - 1, 0);
      rows.push({ line: lines - breaks, value: (record[idColumn] ?? '').trim() });
    }
    return null;
  };
  try {
    parse(text, { relax_column_count: true, skip_empty_lines: true, on_record: collect });
  } catch (err) {
    const at = (err as { lines?: number }).lines;
    throw new KeyferryError(
      'invalid_request',
      `${name} is not well-formed CSV${at === undefined ? '' : ` (line ${at})`}: ${(err as Error).message}; quote a cell that holds commas, quotes or line breaks, and write a quote inside it as ""`,
    );
  }
  return rows;
}

function decodeText(name: string, bytes: Uint8Array): string {
  const nul = bytes.indexOf(0);
  if (nul >= 0) {
    throw new KeyferryError(
      'invalid_request',
      `${name} is not a text file (a NUL byte at offset ${nul}): give a text file with one device id a line, or a CSV with an id column`,
    );
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new KeyferryError(
      'invalid_request',
      `${name} is not UTF-8 text: give a text file with one device id a line, or a CSV with an id column`,
    );
  }
}

import { DEVICE_ID_FORMS, tryParseDeviceId } from './device-id.ts';
import { KeyferryError } from './errors.ts';

/** A device id read from a file, with the line it came from (1-based). */
export interface FileId {
  line: number;
  text: string;
  decimal: string;
}

export interface IdFile {
  ids: FileId[];
  invalid: Array<{ line: number; text: string }>;
  /** Later lines repeating an id (in either form) of an earlier line; sent once. */
  duplicates: Array<{ line: number; firstLine: number }>;
  format: 'lines' | 'csv';
}

/** Largest id file read (50 MB is over a million ids). */
export const MAX_ID_FILE_BYTES = 50 * 1024 * 1024;

/**
 * Reads an id file: one id a line, or CSV whose header row has an `id` column. A UTF-8 BOM and
 * CRLF line ends are accepted, blank lines skipped, spaces around a value ignored. A file that
 * is empty or not text is refused as a whole; bad ids are collected with their line numbers.
 * The CLI (`devices add --file`) and the web console's import read files with this one parser.
 */
export function parseIdFile(name: string, bytes: Uint8Array): IdFile {
  if (bytes.length > MAX_ID_FILE_BYTES) {
    throw new KeyferryError(
      'invalid_request',
      `${name} has ${bytes.length} bytes; at most ${MAX_ID_FILE_BYTES}: split it`,
    );
  }
  const text = decodeText(name, bytes);
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  const first = lines.findIndex((l) => l.trim() !== '');
  if (first < 0) {
    throw new KeyferryError(
      'invalid_request',
      `${name} is empty: put one device id a line (${DEVICE_ID_FORMS}), or a CSV with an id column`,
    );
  }
  const header = splitCsvLine(lines[first]!).map((c) => c.trim().toLowerCase());
  const idColumn = header.indexOf('id');
  const csv = idColumn >= 0;
  const out: IdFile = { ids: [], invalid: [], duplicates: [], format: csv ? 'csv' : 'lines' };
  const seen = new Map<string, number>();
  for (let i = csv ? first + 1 : first; i < lines.length; i++) {
    const raw = lines[i]!;
    if (raw.trim() === '') continue;
    const line = i + 1;
    const value = (csv ? (splitCsvLine(raw)[idColumn] ?? '') : raw).trim();
    const id = tryParseDeviceId(value);
    if (!id) {
      out.invalid.push({ line, text: value });
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

/** Splits one CSV line (RFC 4180 quoting: "a,b" is one cell, "" inside quotes is a quote). */
export function splitCsvLine(line: string): string[] {
  const cells: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else cell += ch;
    } else if (ch === '"' && cell.trim() === '') {
      quoted = true;
      cell = '';
    } else if (ch === ',') {
      cells.push(cell);
      cell = '';
    } else cell += ch;
  }
  cells.push(cell);
  return cells;
}

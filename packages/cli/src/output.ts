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
  write(text: string): void;
  error(text: string): void;
}

export function processOutput(json: boolean): Output {
  return {
    json,
    write: (text) => process.stdout.write(text),
    error: (text) => process.stderr.write(text),
  };
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

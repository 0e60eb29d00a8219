import { DEVICE_ID_FORMS } from '@keyferry/core';
import type { DeviceAnswer, SentId } from './batches.ts';
import type { IdFile } from './id-file.ts';

/** Line numbers listed in a summary line before "…and N more". */
const MAX_LISTED_LINES = 20;

export interface ImportSummary {
  added: number;
  alreadyPresent: number;
  duplicates: Array<{ line: number; firstLine: number }>;
  invalid: Array<{ line?: number; text: string; reason?: string }>;
  inOtherGroup: Array<{ line?: number; text: string; group: string }>;
  refused: Array<{ line?: number; text: string; code: string; reason: string }>;
}

/** Folds the file's own findings and the server's answers into the counts `--file` ends with. */
export function summarize(
  file: Pick<IdFile, 'duplicates' | 'invalid'> | undefined,
  answers: ReadonlyArray<{ sent: SentId; answer: DeviceAnswer }>,
): ImportSummary {
  const s: ImportSummary = {
    added: 0,
    alreadyPresent: 0,
    duplicates: [...(file?.duplicates ?? [])],
    invalid: [...(file?.invalid ?? [])],
    inOtherGroup: [],
    refused: [],
  };
  for (const { sent, answer } of answers) {
    const at = sent.line === undefined ? {} : { line: sent.line };
    if (answer.status === 'added') s.added++;
    else if (answer.status === 'already-present') s.alreadyPresent++;
    else if (answer.status === 'in-other-group')
      s.inOtherGroup.push({ ...at, text: sent.text, group: answer.group ?? '?' });
    else if (answer.status === 'invalid')
      s.invalid.push({ ...at, text: sent.text, reason: answer.reason ?? '' });
    else
      s.refused.push({ ...at, text: sent.text, code: answer.code ?? 'refused', reason: answer.reason ?? '' });
  }
  return s;
}

/** The closing lines of `devices add --file`. */
export function formatImportSummary(s: ImportSummary): string {
  const out = [`Added: ${s.added}`, `Already present: ${s.alreadyPresent}`];
  out.push(
    `Duplicates in file: ${s.duplicates.length}` +
      (s.duplicates.length > 0
        ? ` (${listed(s.duplicates.map((d) => `line ${d.line} repeats line ${d.firstLine}`))})`
        : ''),
  );
  // Ids of the wrong form are told so by the count; any other reason (an id whose value does
  // not fit 42 decimal digits) is named with its lines.
  const unusual = [...groupBy(s.invalid.filter((i) => i.reason && !i.reason.includes(DEVICE_ID_FORMS)))];
  out.push(
    `Invalid: ${s.invalid.length}` +
      (s.invalid.length > 0
        ? ` (${[lines(s.invalid.map((i) => i.line)), ...unusual.map(([why, at]) => `${lines(at)}: ${why}`)].join('; ')})`
        : ''),
  );
  const groups = countBy(s.inOtherGroup.map((d) => d.group));
  out.push(
    `In another group: ${s.inOtherGroup.length}` +
      (s.inOtherGroup.length > 0
        ? ` (${[...groups].map(([g, n]) => `${n} in ${g}`).join(', ')}; ${lines(s.inOtherGroup.map((d) => d.line))})`
        : ''),
  );
  const why = countBy(s.refused.map((r) => `${r.code}: ${r.reason}`));
  out.push(
    `Refused: ${s.refused.length}` +
      (s.refused.length > 0 ? ` (${[...why].map(([w, n]) => `${n} by ${w}`).join('; ')})` : ''),
  );
  return out.join('\n') + '\n';
}

/** One line per device for ids given on the command line. */
export function formatDeviceLine(sent: SentId, answer: DeviceAnswer): string {
  switch (answer.status) {
    case 'added':
      return `${sent.text}: added`;
    case 'already-present':
      return `${sent.text}: already present`;
    case 'deleted':
      return `${sent.text}: deleted`;
    case 'not-present':
      return `${sent.text}: not on the allow-list`;
    case 'in-other-group':
      return `${sent.text}: in another group (${answer.group}); remove it there first`;
    default:
      return `${sent.text}: ${answer.status}: ${answer.reason ?? answer.code ?? ''}`;
  }
}

function lines(numbers: ReadonlyArray<number | undefined>): string {
  const known = numbers.filter((n): n is number => n !== undefined);
  if (known.length === 0) return 'from the command line';
  return (known.length === 1 ? 'line ' : 'lines ') + listed(known.map(String));
}

function listed(items: string[]): string {
  if (items.length <= MAX_LISTED_LINES) return items.join(', ');
  return `${items.slice(0, MAX_LISTED_LINES).join(', ')} …and ${items.length - MAX_LISTED_LINES} more`;
}

function groupBy(invalid: ImportSummary['invalid']): Map<string, Array<number | undefined>> {
  const m = new Map<string, Array<number | undefined>>();
  for (const i of invalid) m.set(i.reason!, [...(m.get(i.reason!) ?? []), i.line]);
  return m;
}

function countBy(keys: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const k of keys) m.set(k, (m.get(k) ?? 0) + 1);
  return m;
}

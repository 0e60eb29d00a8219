import type { FileId, IdFile } from '@keyferry/core';
import type { BulkJobView } from './bulk-jobs.ts';

/**
 * A file import as the console shows it: the bulk job's progress and counts, with the file's
 * own findings (unreadable ids, repeated lines) and the file line of each id the job did not
 * add — the same parts as the summary `devices add --file` ends with.
 */
export interface FileImportSummary {
  status: BulkJobView['status'];
  total: number;
  processed: number;
  added: number;
  alreadyPresent: number;
  duplicates: Array<{ line: number; firstLine: number }>;
  invalid: Array<{ line?: number; text: string; reason?: string }>;
  inOtherGroup: Array<{ line?: number; text: string; group: string }>;
  refused: Array<{ line?: number; text: string; code: string; reason: string }>;
  /** The job kept only the first failures by id; the counts above those lists stay exact. */
  failuresTruncated: boolean;
  error: BulkJobView['error'];
}

/** Decimal id → the line it came from, for {@link fileImportSummary}. */
export function linesOf(file: Pick<IdFile, 'ids'>): Map<string, FileId> {
  return new Map(file.ids.map((id) => [id.decimal, id]));
}

export function fileImportSummary(
  file: Pick<IdFile, 'invalid' | 'duplicates'>,
  lines: ReadonlyMap<string, FileId>,
  job: BulkJobView,
): FileImportSummary {
  const summary: FileImportSummary = {
    status: job.status,
    total: job.total,
    processed: job.processed,
    added: job.counts.added,
    alreadyPresent: job.counts.alreadyPresent,
    duplicates: [...file.duplicates],
    invalid: [...file.invalid],
    inOtherGroup: [],
    refused: [],
    failuresTruncated: job.failuresTruncated,
    error: job.error,
  };
  for (const f of job.failures) {
    const from = lines.get(f.deviceId);
    const at = { ...(from ? { line: from.line } : {}), text: from?.text ?? f.deviceId };
    if (f.status === 'in-other-group') summary.inOtherGroup.push({ ...at, group: f.group ?? '?' });
    else if (f.status === 'invalid') summary.invalid.push({ ...at, reason: f.reason ?? '' });
    else summary.refused.push({ ...at, code: f.code ?? 'refused', reason: f.reason ?? '' });
  }
  return summary;
}

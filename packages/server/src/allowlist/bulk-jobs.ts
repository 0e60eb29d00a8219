import { randomUUID } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { KeyferryError } from '@keyferry/core';
import type { ServiceContext } from '../context.ts';
import { productCatalogue } from '../el2g/products.ts';
import type { Factory } from '../factories/factories.ts';
import type { Db } from '../storage/database.ts';
import type { BulkJobsTable } from '../storage/tables.ts';
import { type AllowListContext, addDevices, type Change } from './allow-list.ts';
import { ADD_STATUSES, type AddStatus, chunks, type DeviceResult } from './device-results.ts';

/** Most ids one bulk job takes (about 4.5 MB of JSON, inside the default body limit). */
export const MAX_JOB_DEVICES = 100_000;
/**
 * Ids a job adds per transaction: each chunk commits on its own, so progress is visible, and
 * the job yields to the event loop between chunks. 250 ids take about 5-10 ms of synchronous
 * SQLite work, so requests (healthz, the device-link) wait at most that long behind a job.
 */
export const JOB_CHUNK = 250;
/** Failures a job keeps by id; the counts stay exact beyond it. */
export const MAX_JOB_FAILURES = 1_000;

export interface JobRequest {
  nc12: string;
  production: boolean;
  deviceIds: string[];
}

export interface JobFailure {
  deviceId: string;
  status: Exclude<AddStatus, 'added' | 'already-present'>;
  group?: string;
  code?: string;
  reason?: string;
}

interface JobResult {
  counts: Record<AddStatus, number>;
  failures: JobFailure[];
  failuresTruncated: boolean;
  error: { code: string; message: string } | null;
}

/** A bulk registration job as `GET el2g-proxy/device-jobs/<id>` shows it. */
export interface BulkJobView {
  id: string;
  status: BulkJobsTable['status'];
  nc12: string;
  production: boolean;
  total: number;
  processed: number;
  counts: { added: number; alreadyPresent: number; invalid: number; inOtherGroup: number; refused: number };
  failures: JobFailure[];
  failuresTruncated: boolean;
  error: { code: string; message: string } | null;
  createdAt: string;
  finishedAt: string | null;
}

/**
 * Runs bulk registrations in the background of the process that accepted them, a chunk per
 * transaction. On shutdown a running job stops between chunks and is marked failed (adding is
 * idempotent, so resubmitting the same ids finishes it).
 */
export type JobContext = AllowListContext & Pick<ServiceContext, 'log'>;

export class BulkJobRunner {
  readonly #ctx: JobContext;
  readonly #running = new Set<Promise<void>>();
  #stopping = false;

  constructor(ctx: JobContext) {
    this.#ctx = ctx;
  }

  async submit(factory: Factory, request: JobRequest, change: Change): Promise<BulkJobView> {
    if (!productCatalogue(this.#ctx.config).has(request.nc12)) {
      throw new KeyferryError('unknown_product', `unknown product id ${request.nc12}: not in the catalogue`);
    }
    if (request.deviceIds.length > MAX_JOB_DEVICES) {
      throw new KeyferryError(
        'invalid_request',
        `${request.deviceIds.length} devices in one job; at most ${MAX_JOB_DEVICES}: split it into several jobs`,
      );
    }
    const id = randomUUID();
    const result: JobResult = { counts: zeroCounts(), failures: [], failuresTruncated: false, error: null };
    await this.#ctx.database.db
      .insertInto('bulk_jobs')
      .values({
        id,
        factory_id: factory.id,
        status: 'queued',
        // Not the ids: they are never read back (a stopped job is resubmitted), and parsing
        // megabytes of them on every status poll blocked the process
        request: JSON.stringify({ nc12: request.nc12, production: request.production }),
        total: request.deviceIds.length,
        processed: 0,
        result: JSON.stringify(result),
        created_at: new Date().toISOString(),
        finished_at: null,
      })
      .execute();
    const run = this.#run(factory, id, request, change, result).finally(() => this.#running.delete(run));
    this.#running.add(run);
    return getBulkJob(this.#ctx.database.db, factory.id, id);
  }

  /** Stops taking chunks and waits for the running jobs to record where they stopped. */
  async close(): Promise<void> {
    this.#stopping = true;
    await Promise.allSettled([...this.#running]);
  }

  async #run(
    factory: Factory,
    id: string,
    request: JobRequest,
    change: Change,
    result: JobResult,
  ): Promise<void> {
    const db = this.#ctx.database.db;
    let processed = 0;
    try {
      await db.updateTable('bulk_jobs').set({ status: 'running' }).where('id', '=', id).execute();
      for (const part of chunks(request.deviceIds, JOB_CHUNK)) {
        // Each chunk is one event-loop turn (better-sqlite3 is synchronous and the awaits
        // between its statements are only microtasks): yield so requests run between chunks
        await nextTurn();
        if (this.#stopping) {
          throw new KeyferryError(
            'unavailable',
            'keyferryd stopped during the job: submit the same ids again',
          );
        }
        const answer = await addDevices(this.#ctx, factory, { ...request, ids: part }, change);
        for (const s of ADD_STATUSES) result.counts[s] += answer.counts[s];
        for (const r of answer.results) recordFailure(result, r);
        processed += part.length;
        await db
          .updateTable('bulk_jobs')
          .set({ processed, result: JSON.stringify(result) })
          .where('id', '=', id)
          .execute();
      }
      await finish(db, id, 'done', processed, result);
    } catch (err) {
      result.error =
        err instanceof KeyferryError && err.expose
          ? { code: err.code, message: err.message }
          : { code: 'internal', message: 'internal error; see the keyferryd log' };
      if (!(err instanceof KeyferryError && err.expose))
        this.#ctx.log.error({ err, job: id }, 'bulk job failed');
      await finish(db, id, 'failed', processed, result).catch(() => {});
    }
  }
}

function recordFailure(result: JobResult, r: DeviceResult<AddStatus>): void {
  if (r.status === 'added' || r.status === 'already-present') return;
  if (result.failures.length >= MAX_JOB_FAILURES) {
    result.failuresTruncated = true;
    return;
  }
  const failure: JobFailure = { deviceId: r.id, status: r.status };
  if (r.group !== undefined) failure.group = r.group;
  if (r.code !== undefined) failure.code = r.code;
  if (r.reason !== undefined) failure.reason = r.reason;
  result.failures.push(failure);
}

async function finish(
  db: Db,
  id: string,
  status: 'done' | 'failed',
  processed: number,
  result: JobResult,
): Promise<void> {
  await db
    .updateTable('bulk_jobs')
    .set({ status, processed, result: JSON.stringify(result), finished_at: new Date().toISOString() })
    .where('id', '=', id)
    .execute();
}

function zeroCounts(): Record<AddStatus, number> {
  return { added: 0, 'already-present': 0, invalid: 0, 'in-other-group': 0, refused: 0 };
}

export async function getBulkJob(db: Db, factoryId: number, id: string): Promise<BulkJobView> {
  const row = await db
    .selectFrom('bulk_jobs')
    .selectAll()
    .where('factory_id', '=', factoryId)
    .where('id', '=', id)
    .executeTakeFirst();
  if (!row) throw new KeyferryError('not_found', `bulk job ${id} not found in this factory`);
  const request = JSON.parse(row.request) as Pick<JobRequest, 'nc12' | 'production'>;
  const result = JSON.parse(row.result) as JobResult;
  return {
    id: row.id,
    status: row.status,
    nc12: request.nc12,
    production: request.production,
    total: row.total,
    processed: row.processed,
    counts: {
      added: result.counts.added,
      alreadyPresent: result.counts['already-present'],
      invalid: result.counts.invalid,
      inOtherGroup: result.counts['in-other-group'],
      refused: result.counts.refused,
    },
    failures: result.failures,
    failuresTruncated: result.failuresTruncated,
    error: result.error,
    createdAt: row.created_at,
    finishedAt: row.finished_at,
  };
}

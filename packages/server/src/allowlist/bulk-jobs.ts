import { randomUUID } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { KeyferryError } from '@keyferry/core';
import type { ExpressionBuilder } from 'kysely';
import type { ServiceContext } from '../context.ts';
import { productCatalogue } from '../el2g/products.ts';
import { type Factory, findFactoryById } from '../factories/factories.ts';
import type { Db } from '../storage/database.ts';
import { databaseRefusal } from '../storage/database-unreachable.ts';
import { StorageFullError } from '../storage/storage-full.ts';
import type { BulkJobsTable, Tables } from '../storage/tables.ts';
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

/** How long a claimed job stays with its node without news; each chunk renews it. */
export const JOB_LEASE_MS = 60_000;
/** How often an idle node looks for queued jobs and jobs whose lease ran out. */
export const JOB_POLL_MS = 2_000;

export type JobContext = AllowListContext & Pick<ServiceContext, 'log'>;

/** Tunables for tests; production uses the constants above. */
export interface JobRunnerOptions {
  leaseMs?: number;
  pollMs?: number;
  chunk?: number;
}

/**
 * Runs bulk registrations in the background, a chunk per transaction. A job is a row that any
 * keyferryd on the same database may claim: the claim takes a lease (`FOR UPDATE SKIP LOCKED`
 * on PostgreSQL, so two nodes never take the same row; SQLite serializes writers), every chunk
 * renews it, and a node writes progress only while it still holds the lease. A job whose node
 * died is claimed again once its lease runs out and resumes after the last recorded chunk;
 * adding is idempotent, so the chunk that was in flight is safe to add again (its ids then
 * count as already present). On shutdown a node stops between chunks and hands the job back
 * to the queue for another node, or for itself on its next start.
 */
export class BulkJobRunner {
  readonly #ctx: JobContext;
  readonly #node = randomUUID();
  readonly #leaseMs: number;
  readonly #chunk: number;
  readonly #timer: NodeJS.Timeout;
  #active: Promise<void> | null = null;
  #again = false;
  #stopping = false;

  constructor(ctx: JobContext, options: JobRunnerOptions = {}) {
    this.#ctx = ctx;
    this.#leaseMs = options.leaseMs ?? JOB_LEASE_MS;
    this.#chunk = options.chunk ?? JOB_CHUNK;
    this.#timer = setInterval(() => this.#wake(), options.pollMs ?? JOB_POLL_MS);
    this.#timer.unref();
    this.#wake();
  }

  /** This node's lease owner id, as `bulk_jobs.lease_owner` shows it. */
  get node(): string {
    return this.#node;
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
        // the ids too: whichever node claims the job (or resumes it after a crash) reads them here
        request: JSON.stringify(request),
        total: request.deviceIds.length,
        processed: 0,
        result: JSON.stringify(result),
        created_at: new Date().toISOString(),
        finished_at: null,
        actor: change.actor,
        correlation_id: change.correlationId,
        lease_owner: null,
        lease_until: null,
      })
      .execute();
    const view = await getBulkJob(this.#ctx.database.db, factory.id, id);
    this.#wake();
    return view;
  }

  /** Stops taking chunks, hands the running job back to the queue and waits until it has. */
  async close(): Promise<void> {
    this.#stopping = true;
    clearInterval(this.#timer);
    await this.#active;
  }

  /** Starts draining claimable jobs unless this node is already at it (then it looks again after). */
  #wake(): void {
    if (this.#stopping) return;
    if (this.#active) {
      this.#again = true;
      return;
    }
    this.#active = this.#drain()
      .catch((err: unknown) => {
        // a full disk, a database that is not there or one that is busy is logged once a burst
        // (the claim is tried again every poll)
        const log = this.#ctx.log;
        if (!databaseRefusal(err, log)) log.error({ err }, 'could not claim a bulk job');
      })
      .finally(() => {
        this.#active = null;
        if (this.#again) {
          this.#again = false;
          this.#wake();
        }
      });
  }

  async #drain(): Promise<void> {
    for (;;) {
      this.#again = false;
      if (this.#stopping) return;
      const row = await this.#claim();
      if (!row) return;
      await this.#run(row);
    }
  }

  /** Takes the oldest queued job, or one whose lease ran out, with a fresh lease for this node. */
  async #claim(): Promise<BulkJobsTable | undefined> {
    const { db, dialect } = this.#ctx.database;
    const now = new Date();
    const claimable = (eb: ExpressionBuilder<Tables, 'bulk_jobs'>) =>
      eb.or([
        eb('status', '=', 'queued'),
        eb.and([eb('status', '=', 'running'), eb('lease_until', '<', now.toISOString())]),
      ]);
    return db.transaction().execute(async (trx) => {
      let pick = trx.selectFrom('bulk_jobs').select('id').where(claimable).orderBy('created_at').limit(1);
      if (dialect === 'postgres') pick = pick.forUpdate().skipLocked();
      const candidate = await pick.executeTakeFirst();
      if (!candidate) return undefined;
      // The condition again: on SQLite another process may have claimed the row since the read.
      return trx
        .updateTable('bulk_jobs')
        .set({ status: 'running', lease_owner: this.#node, lease_until: this.#leaseEnd() })
        .where('id', '=', candidate.id)
        .where(claimable)
        .returningAll()
        .executeTakeFirst();
    });
  }

  async #run(row: BulkJobsTable): Promise<void> {
    const request = JSON.parse(row.request) as JobRequest;
    const result = JSON.parse(row.result) as JobResult;
    const change: Change = { actor: row.actor, correlationId: row.correlation_id };
    let processed = row.processed;
    try {
      const factory = await findFactoryById(this.#ctx.database.db, row.factory_id);
      if (!factory)
        throw new KeyferryError('not_found', `factory ${row.factory_id} of the job no longer exists`);
      for (const part of chunks(request.deviceIds.slice(processed), this.#chunk)) {
        if (this.#stopping) {
          await this.#record(row.id, {
            status: 'queued',
            processed,
            result,
            lease_owner: null,
            lease_until: null,
          });
          return;
        }
        const answer = await addDevices(this.#ctx, factory, { ...request, ids: part }, change);
        for (const s of ADD_STATUSES) result.counts[s] += answer.counts[s];
        for (const r of answer.results) recordFailure(result, r);
        processed += part.length;
        if (!(await this.#record(row.id, { processed, result, lease_until: this.#leaseEnd() }))) {
          this.#ctx.log.warn({ job: row.id }, 'bulk job lease lost to another node; it continues there');
          return;
        }
        // Each chunk is one event-loop turn (better-sqlite3 is synchronous and the awaits
        // between its statements are only microtasks): yield so requests run between chunks
        await nextTurn();
      }
      await this.#finish(row.id, 'done', processed, result);
    } catch (err) {
      // a full disk, a database gone or busy is the refusal a request gets, logged once a
      // burst, not a stack per job
      const refused = databaseRefusal(err, this.#ctx.log);
      const shown = refused ?? (err instanceof KeyferryError && err.expose ? err : undefined);
      result.error = shown
        ? { code: shown.code, message: shown.message }
        : { code: 'internal', message: 'internal error; see the keyferryd log' };
      if (refused)
        this.#ctx.log.info(
          { job: row.id, code: refused.reason.code, processed },
          refused instanceof StorageFullError ? 'bulk job failed: storage full' : 'bulk job failed: database',
        );
      else if (!shown) this.#ctx.log.error({ err, job: row.id }, 'bulk job failed');
      await this.#finish(row.id, 'failed', processed, result).catch(() => {});
    }
  }

  #finish(id: string, status: 'done' | 'failed', processed: number, result: JobResult): Promise<boolean> {
    return this.#record(id, {
      status,
      processed,
      result,
      finished_at: new Date().toISOString(),
      lease_owner: null,
      lease_until: null,
    });
  }

  /** Writes the job's row if this node still holds its lease; false when it no longer does. */
  async #record(
    id: string,
    set: Partial<Omit<BulkJobsTable, 'result'>> & { result: JobResult },
  ): Promise<boolean> {
    const updated = await this.#ctx.database.db
      .updateTable('bulk_jobs')
      .set({ ...set, result: JSON.stringify(set.result) })
      .where('id', '=', id)
      .where('lease_owner', '=', this.#node)
      .executeTakeFirst();
    return updated.numUpdatedRows > 0n;
  }

  #leaseEnd(): string {
    return new Date(Date.now() + this.#leaseMs).toISOString();
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

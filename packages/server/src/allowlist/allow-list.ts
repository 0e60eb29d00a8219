import { invalidDeviceIdMessage, KeyferryError, tryParseDeviceId } from '@keyferry/core';
import { type AuditEntry, recordAuditBatch } from '../audit/audit-log.ts';
import type { ServiceContext } from '../context.ts';
import { addFactoryProduct } from '../el2g/enablement.ts';
import { deviceGroupName, productCatalogue } from '../el2g/products.ts';
import type { Factory } from '../factories/factories.ts';
import { type RefreshDeps, refreshCrls } from '../revocation/refresh.ts';
import { type Db, transactionForFactory } from '../storage/database.ts';
import {
  ADD_SETTLED,
  ADD_STATUSES,
  type AddStatus,
  type BatchAnswer,
  chunks,
  countResults,
  DELETE_STATUSES,
  type DeleteStatus,
  type DeviceResult,
  type ParsedRequestId,
  refuseIfNoneSettled,
} from './device-results.ts';
import { type ActiveRow, activeRows, insertDevices, STATEMENT_ROWS } from './device-rows.ts';
import {
  assertEvaluationActive,
  countDevicesAddedSince,
  deviceQuotaRefusal,
  loadPlanRow,
  subscriptionYear,
} from './plan.ts';

/** Most ids one add/delete request may carry; larger sets go through a bulk job or several requests. */
export const MAX_DEVICES_PER_REQUEST = 10_000;
export const REVOCATION_REASON = 'device deleted from the allow-list';

export type AllowListContext = Pick<ServiceContext, 'database' | 'config'>;
/** Deleting also re-signs the CRLs of the revoked certificates' CAs. */
export type DeleteContext = AllowListContext & Pick<ServiceContext, 'custody' | 'log'>;

export interface BatchRequest {
  nc12: string;
  ids: readonly string[];
  production: boolean;
}

export interface Change {
  actor: string;
  correlationId: string;
}

/**
 * Adds devices to a product's group. Every id gets its own answer, in request order. Over the
 * yearly quota the batch is partial: the first new ids that fit are added and the rest answer
 * `refused` naming the limit, its usage and its maximum. An expired evaluation refuses the
 * whole request (nothing could be added). One transaction; concurrent adds of one id leave
 * exactly one row (the partial unique index), the loser answering `already-present`.
 */
export async function addDevices(
  ctx: AllowListContext,
  factory: Factory,
  request: BatchRequest,
  change: Change,
  now = new Date(),
  options: { refuseIfNoneAdded?: boolean } = {},
): Promise<BatchAnswer<AddStatus>> {
  const { results, parsed } = parseRequest<AddStatus>(ctx, request);
  const groupName = deviceGroupName(request.nc12, request.production);
  // Checked inside the transaction too: a refusal must also undo a product it added
  const settle = (a: BatchAnswer<AddStatus>) =>
    options.refuseIfNoneAdded ? refuseIfNoneSettled(a, ADD_SETTLED, 'added') : a;
  if (parsed.length > 0) {
    await transactionForFactory(ctx.database.db, factory.id, async (trx) => {
      // PostgreSQL: the plan row lock serializes adds per factory, so the quota holds under
      // concurrency; SQLite already runs one write transaction at a time.
      const plan = await loadPlanRow(trx, factory.id, ctx.database.dialect === 'postgres');
      assertEvaluationActive(plan, now);
      await addFactoryProduct(trx, ctx.config, factory, request.nc12, now);
      const groupId = await findGroupId(trx, factory.id, groupName);
      const active = await activeRows(trx, factory.id, parsed);
      const year = subscriptionYear(plan.subscription_start, now);
      let used = await countDevicesAddedSince(trx, factory.id, year.start);
      const fresh: ParsedRequestId[] = [];
      const taken = new Set<string>();
      for (const p of parsed) {
        const result = results[p.index]!;
        const row = active.get(p.id.decimal);
        if (row) Object.assign(result, presentAnswer(row, groupId));
        else if (taken.has(p.id.decimal)) result.status = 'already-present';
        else if (used < plan.max_devices) {
          taken.add(p.id.decimal);
          fresh.push(p);
          used++;
        } else
          Object.assign(result, { status: 'refused', ...deviceQuotaRefusal(used, plan.max_devices, year) });
      }
      const inserted = await insertDevices(trx, factory.id, groupId, request.nc12, fresh, now);
      const lost = fresh.filter((p) => !inserted.has(p.id.decimal));
      const winners =
        lost.length > 0 ? await activeRows(trx, factory.id, lost) : new Map<string, ActiveRow>();
      for (const p of fresh) {
        const result = results[p.index]!;
        const winner = winners.get(p.id.decimal);
        if (inserted.has(p.id.decimal)) result.status = 'added';
        else if (winner) Object.assign(result, presentAnswer(winner, groupId));
        else result.status = 'already-present';
      }
      await recordAuditBatch(
        trx,
        fresh
          .filter((p) => inserted.has(p.id.decimal))
          .map((p) =>
            audit(factory, change, 'device.add', p.id.decimal, { group: groupName, nc12: request.nc12 }),
          ),
        now,
      );
      settle(answer(request, groupName, ADD_STATUSES, results));
    });
  }
  return settle(answer(request, groupName, ADD_STATUSES, results));
}

/**
 * Removes devices from a product's group: sets `deleted_at` (the record and its audit history
 * stay), marks the device's certificates revoked, and records the change. After the commit
 * the CRLs of the revoked certificates' CAs are re-signed (best effort).
 */
export async function deleteDevices(
  ctx: DeleteContext,
  factory: Factory,
  request: BatchRequest,
  change: Change,
  now = new Date(),
): Promise<BatchAnswer<DeleteStatus>> {
  const { results, parsed } = parseRequest<DeleteStatus>(ctx, request);
  const groupName = deviceGroupName(request.nc12, request.production);
  const revokedCas = new Set<number>();
  if (parsed.length > 0) {
    await transactionForFactory(ctx.database.db, factory.id, async (trx) => {
      const active = await activeRows(trx, factory.id, parsed);
      const doomed: ActiveRow[] = [];
      const gone = new Set<string>();
      for (const p of parsed) {
        const result = results[p.index]!;
        const row = active.get(p.id.decimal);
        if (!row || gone.has(p.id.decimal)) result.status = 'not-present';
        else if (row.group !== groupName)
          Object.assign(result, { status: 'in-other-group', group: row.group });
        else {
          result.status = 'deleted';
          gone.add(p.id.decimal);
          doomed.push(row);
        }
      }
      const at = now.toISOString();
      const revoked = new Map<number, number>();
      for (const part of chunks(doomed, STATEMENT_ROWS)) {
        const rowIds = part.map((r) => r.row);
        await trx.updateTable('devices').set({ deleted_at: at }).where('id', 'in', rowIds).execute();
        const certs = await trx
          .updateTable('certificates')
          .set({ revoked_at: at, revocation_reason: REVOCATION_REASON })
          .where('device_row_id', 'in', rowIds)
          .where('revoked_at', 'is', null)
          .returning(['device_row_id', 'ca_id'])
          .execute();
        for (const c of certs) {
          revoked.set(c.device_row_id!, (revoked.get(c.device_row_id!) ?? 0) + 1);
          revokedCas.add(c.ca_id);
        }
      }
      await recordAuditBatch(
        trx,
        doomed.map((r) =>
          audit(factory, change, 'device.delete', r.deviceId, {
            group: groupName,
            revokedCertificates: revoked.get(r.row) ?? 0,
          }),
        ),
        now,
      );
    });
    await refreshCrls(crlDeps(ctx), revokedCas);
  }
  return answer(request, groupName, DELETE_STATUSES, results);
}

function crlDeps(ctx: DeleteContext): RefreshDeps {
  return { db: ctx.database.db, custody: ctx.custody, log: ctx.log };
}

function parseRequest<S extends string>(
  ctx: AllowListContext,
  request: BatchRequest,
): { results: DeviceResult<S | 'invalid'>[]; parsed: ParsedRequestId[] } {
  if (!productCatalogue(ctx.config).has(request.nc12)) {
    throw new KeyferryError(
      'unknown_product',
      `unknown product id ${request.nc12}: known 12NCs are ${[...productCatalogue(ctx.config).keys()].join(', ')} (add others under products: in the config)`,
    );
  }
  if (request.ids.length > MAX_DEVICES_PER_REQUEST) {
    throw new KeyferryError(
      'invalid_request',
      `${request.ids.length} devices in one request; at most ${MAX_DEVICES_PER_REQUEST}: split it, or use a bulk job (POST el2g-proxy/device-jobs)`,
    );
  }
  const results: DeviceResult<S | 'invalid'>[] = [];
  const parsed: ParsedRequestId[] = [];
  request.ids.forEach((text, index) => {
    const id = tryParseDeviceId(text);
    if (!id) {
      results.push({
        id: text,
        status: 'invalid',
        code: 'invalid_device_id',
        reason: invalidDeviceIdMessage(text),
      });
      return;
    }
    results.push({ id: text, 'device-id': id.decimal, status: 'invalid' }); // set below
    parsed.push({ index, text, id });
  });
  return { results, parsed };
}

function presentAnswer(row: ActiveRow, groupId: number): Partial<DeviceResult<AddStatus>> {
  return row.groupId === groupId
    ? { status: 'already-present' }
    : { status: 'in-other-group', group: row.group };
}

async function findGroupId(db: Db, factoryId: number, name: string): Promise<number> {
  const group = await db
    .selectFrom('device_groups')
    .select('id')
    .where('factory_id', '=', factoryId)
    .where('name', '=', name)
    .executeTakeFirstOrThrow();
  return group.id;
}

function audit(
  factory: Factory,
  change: Change,
  action: string,
  deviceId: string,
  detail: Record<string, unknown>,
): AuditEntry {
  return {
    factoryId: factory.id,
    actor: change.actor,
    action,
    object: `device:${deviceId}`,
    detail,
    correlationId: change.correlationId,
  };
}

function answer<S extends string>(
  request: BatchRequest,
  group: string,
  statuses: readonly S[],
  results: DeviceResult<S | 'invalid'>[],
): BatchAnswer<S> {
  const typed = results as DeviceResult<S>[];
  return {
    'product-id': request.nc12,
    group,
    production: request.production,
    counts: countResults(statuses, typed),
    results: typed,
  };
}

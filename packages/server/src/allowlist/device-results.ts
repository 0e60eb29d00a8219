import { type DeviceId, type ErrorCode, KeyferryError } from '@keyferry/core';

/** What happened to one device of an add request, in request order. */
export type AddStatus = 'added' | 'already-present' | 'invalid' | 'in-other-group' | 'refused';
/** What happened to one device of a delete request, in request order. */
export type DeleteStatus = 'deleted' | 'not-present' | 'invalid' | 'in-other-group';

export interface DeviceResult<S extends string> {
  /** The id as the caller sent it. */
  id: string;
  /** Canonical decimal id; absent when `id` is not a device id. */
  'device-id'?: string;
  status: S;
  /** in-other-group: the group the device is in. */
  group?: string;
  /** refused / invalid: the error code and what is wrong. */
  code?: string;
  reason?: string;
  /** refused: the limit, its current usage and its maximum. */
  limit?: string;
  usage?: number;
  max?: number;
}

export interface BatchAnswer<S extends string> {
  'product-id': string;
  group: string;
  production: boolean;
  counts: Record<S, number>;
  results: DeviceResult<S>[];
}

export function countResults<S extends string>(
  statuses: readonly S[],
  results: DeviceResult<S>[],
): Record<S, number> {
  const counts = Object.fromEntries(statuses.map((s) => [s, 0])) as Record<S, number>;
  for (const r of results) counts[r.status]++;
  return counts;
}

export const ADD_STATUSES: readonly AddStatus[] = [
  'added',
  'already-present',
  'invalid',
  'in-other-group',
  'refused',
];
export const DELETE_STATUSES: readonly DeleteStatus[] = [
  'deleted',
  'not-present',
  'invalid',
  'in-other-group',
];

/** Statuses in which a device ends as the request wanted: added / deleted, or already so. */
export const ADD_SETTLED: readonly AddStatus[] = ['added', 'already-present'];
export const DELETE_SETTLED: readonly DeleteStatus[] = ['deleted', 'not-present'];

/** Reasons quoted in the refusal's message; every one is in `info.results`. */
const QUOTED_REASONS = 3;

/**
 * fioctl (and any script) takes a 2xx as success, so a batch in which no device ended as asked
 * is a refusal: one code when every device failed the same way, else `conflict`, with the
 * whole per-device answer in `info`. A batch that did something stays a 200 with its results.
 */
export function refuseIfNoneSettled<S extends string>(
  answer: BatchAnswer<S>,
  settled: readonly S[],
  verb: 'added' | 'deleted',
): BatchAnswer<S> {
  if (answer.results.some((r) => settled.includes(r.status))) return answer;
  const codes = new Set(answer.results.map((r) => failureCode(r)));
  const [only] = codes;
  const reasons = answer.results.map(failureReason);
  const more = reasons.length - QUOTED_REASONS;
  throw new KeyferryError(
    codes.size === 1 && only ? only : 'conflict',
    `no device ${verb}: ${reasons.slice(0, QUOTED_REASONS).join('; ')}${more > 0 ? `; …and ${more} more (see info.results)` : ''}`,
    { detail: { ...answer } },
  );
}

function failureCode(r: DeviceResult<string>): ErrorCode {
  if (r.status === 'in-other-group') return 'device_in_other_group';
  return (r.code as ErrorCode | undefined) ?? 'conflict';
}

function failureReason(r: DeviceResult<string>): string {
  if (r.status === 'in-other-group') return `${r.id} is in group ${r.group}: remove it there first`;
  return r.reason ?? `${r.id}: ${r.status}`;
}

export interface ParsedRequestId {
  index: number;
  text: string;
  id: DeviceId;
}

/** Splits `items` into chunks of at most `size` (keeps statements under parameter limits). */
export function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

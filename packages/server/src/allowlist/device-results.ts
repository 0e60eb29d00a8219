import type { DeviceId } from '@keyferry/core';

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

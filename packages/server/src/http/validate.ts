import { KeyferryError } from '@keyferry/core';
import type { z } from 'zod';

/**
 * The largest row id and cursor a request may name: ids are 32-bit integers in PostgreSQL
 * (`serial`), which refuses a larger value as out of range; past it the refusal says so.
 */
export const MAX_ROW_ID = 2_147_483_647;

/** Validates a decoded body with a strict schema; unknown fields are named in the refusal. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown, what = 'request body'): z.output<S> {
  const result = schema.safeParse(body ?? {});
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  if (issue?.code === 'unrecognized_keys') {
    throw new KeyferryError(
      'unknown_field',
      `${what} has unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`,
      { detail: { fields: issue.keys } },
    );
  }
  const at = issue && issue.path.length > 0 ? `field "${issue.path.join('.')}"` : what;
  throw new KeyferryError('invalid_request', `${at}: ${issue?.message ?? 'invalid'}`);
}

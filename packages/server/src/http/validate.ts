import { KeyferryError } from '@keyferry/core';
import { z } from 'zod';

/**
 * The largest row id and cursor a request may name: ids are 32-bit integers in PostgreSQL
 * (`serial`), which refuses a larger value as out of range; past it the refusal says so.
 */
export const MAX_ROW_ID = 2_147_483_647;

/**
 * A whole number from a query string, in plain decimal digits only, from `min` to `max`:
 * z.coerce.number() (Number()) also read `0x10` as 16, `1e1` as 10, ` 16` as 16 and an empty
 * value as 0.
 */
export function decimalQuery(min: number, max: number) {
  return z
    .string()
    .regex(/^[0-9]+$/, {
      error: (issue) =>
        `${JSON.stringify(String(issue.input).slice(0, 20))} is not a decimal whole number: write it in the digits 0-9 only`,
    })
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));
}

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

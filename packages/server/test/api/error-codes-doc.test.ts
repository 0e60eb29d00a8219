import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERROR_CODES } from '@keyferry/core';
import { describe, expect, it } from 'vitest';

const API_DOC = readFileSync(join(import.meta.dirname, '../../../../docs/api.md'), 'utf8');

describe('docs/api.md error table', () => {
  const documented = new Map(
    [...API_DOC.matchAll(/^\|\s*`([a-z_]+)`\s*\|\s*(\d{3})\s*\|/gm)].map((m) => [
      m[1] as string,
      Number(m[2]),
    ]),
  );

  it('lists every error code with its HTTP status', () => {
    for (const [code, status] of Object.entries(ERROR_CODES)) {
      expect(documented.get(code), code).toBe(status);
    }
  });

  it('lists no code that the code does not have', () => {
    for (const code of documented.keys()) expect(Object.keys(ERROR_CODES)).toContain(code);
  });
});

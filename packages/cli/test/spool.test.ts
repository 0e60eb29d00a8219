import { describe, expect, it } from 'vitest';
import { type Output, Spool } from '../src/output.ts';

/** The spool that holds a --json listing until its last page came. */
describe('Spool', () => {
  it('gives back exactly what was written, over many chunks, split anywhere in a character', async () => {
    const spool = new Spool();
    const pieces = Array.from({ length: 3000 }, (_, i) => `{"id":"${i}","group":"größe-✓"},`);
    for (const piece of pieces) spool.write(piece);
    const chunks: Buffer[] = [];
    const out: Output = {
      json: true,
      write: (text) => chunks.push(Buffer.from(text)),
      error: () => {},
      drained: async () => {},
    };
    try {
      await spool.copyTo(out);
    } finally {
      spool.close();
    }
    expect(chunks.length).toBeGreaterThan(1);
    expect(Buffer.concat(chunks).toString('utf8')).toBe(pieces.join(''));
  });
});

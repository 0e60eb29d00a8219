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

  it('gives back each line once, whole, over many chunks, split anywhere in a line or a character', async () => {
    const spool = new Spool();
    const lines = Array.from({ length: 3000 }, (_, i) => `["größe-✓-${i}","${'x'.repeat(i % 97)}"]`);
    for (const line of lines) spool.write(`${line}\n`);
    spool.write('no newline at the end');
    const chunks: string[] = [];
    const out: Output = {
      json: false,
      write: (text) => chunks.push(String(text)),
      error: () => {},
      drained: async () => {},
    };
    try {
      await spool.copyLinesTo(out, (line) => `<${line}>`);
    } finally {
      spool.close();
    }
    expect(chunks.length).toBeGreaterThan(1);
    expect(chunks.join('')).toBe([...lines, 'no newline at the end'].map((l) => `<${l}>`).join(''));
  });
});

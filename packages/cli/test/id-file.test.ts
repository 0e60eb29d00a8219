import { DEVICE_ID_TOO_LARGE } from '@keyferry/core';
import { describe, expect, it } from 'vitest';
import { parseIdFile } from '../src/devices/id-file.ts';
import { createProgress } from '../src/devices/progress.ts';
import { formatImportSummary, summarize } from '../src/devices/summary.ts';

const HEX = '0x04005001eee3ba1ee96e60047e57da0f6880';
const DEC = '348555492004256518532939906410866457667712';
const enc = (s: string) => new TextEncoder().encode(s);
const FORM = 'use 0x followed by 36 hex digits, or 42 decimal digits';

describe('device id files', () => {
  it('reads one id a line with a BOM and CRLF, skipping blank lines and counting duplicates in either form', () => {
    const f = parseIdFile(
      'ids.txt',
      enc(`\uFEFF${HEX}\r\n\r\n  0x04005001eee3ba1ee96e60047e57da0f6881 \r\n${DEC}\r\n0x12\r\n`),
    );
    expect(f.format).toBe('lines');
    expect(f.ids.map((i) => [i.line, i.text])).toEqual([
      [1, HEX],
      [3, '0x04005001eee3ba1ee96e60047e57da0f6881'],
    ]);
    expect(f.duplicates).toEqual([{ line: 4, firstLine: 1 }]);
    expect(f.invalid).toEqual([{ line: 5, text: '0x12', reason: FORM }]);
  });

  it('reads the id column of a CSV, quoted cells included', () => {
    const f = parseIdFile('ids.csv', enc(`name,"ID",site\n"a, b",${HEX},x\nc,"${DEC.slice(1)}",y\n`));
    expect(f.format).toBe('csv');
    expect(f.ids.map((i) => i.line)).toEqual([2]);
    expect(f.invalid).toEqual([{ line: 3, text: DEC.slice(1), reason: FORM }]);
    const q = parseIdFile('q.csv', enc(`site,id\n"a ""q"", b",${HEX}\n`));
    expect(q.ids.map((i) => [i.line, i.text])).toEqual([[2, HEX]]);
  });

  it('the CSV reader split lines before parsing: quoted cells with newlines keep the rows after them, each at the line it starts on', () => {
    const next = '0x04005001eee3ba1ee96e60047e57da0f6881';
    const last = '0x04005001eee3ba1ee96e60047e57da0f6882';
    const text = [
      'note,id,site', // 1
      `"first line`, // 2
      `second, with a comma",${HEX},a`, // 3
      '', // 4
      `plain,${next},b`, // 5
      `"crlf\r\ninside\r\n""quoted""",0x12,c`, // 6-8
      `x,"${last}",d`, // 9
    ].join('\r\n');
    const f = parseIdFile('fleet.csv', enc(`\uFEFF${text}\r\n`));
    expect(f.format).toBe('csv');
    expect(f.ids.map((i) => [i.line, i.text])).toEqual([
      [2, HEX],
      [5, next],
      [9, last],
    ]);
    expect(f.invalid).toEqual([{ line: 6, text: '0x12', reason: FORM }]);
    expect(() => parseIdFile('open.csv', enc(`id,note\n${HEX},"never closed\n${next},x\n`))).toThrow(
      /^open\.csv is not well-formed CSV \(line \d\): .*Quote Not Closed.*; quote a cell that holds commas, quotes or line breaks/,
    );
  });

  it('an id too large for 42 decimal digits is named in the summary with its line and what is wrong', () => {
    const big = '0xff005001eee3ba1ee96e60047e57da0f6880';
    const f = parseIdFile('ids.txt', enc(`${HEX}\n0x12\n${big}\n`));
    expect(f.invalid).toEqual([
      { line: 2, text: '0x12', reason: FORM },
      { line: 3, text: big, reason: DEVICE_ID_TOO_LARGE },
    ]);
    expect(formatImportSummary(summarize(f, []))).toContain(
      `Invalid: 2 (lines 2, 3; line 3: ${DEVICE_ID_TOO_LARGE})\n`,
    );
  });

  it('refuses an empty file, a blank one, a binary one and non-UTF-8 text, saying what to give', () => {
    expect(() => parseIdFile('e', enc(''))).toThrow(/e is empty: put one device id a line/);
    expect(() => parseIdFile('e', enc('\uFEFF\r\n  \n'))).toThrow(/is empty/);
    expect(() => parseIdFile('b', Uint8Array.from([0x7f, 0x45, 0x4c, 0x46, 0, 1]))).toThrow(
      /b is not a text file \(a NUL byte at offset 4\)/,
    );
    expect(() => parseIdFile('l', Uint8Array.from([0x30, 0x78, 0xff, 0xfe]))).toThrow(/l is not UTF-8 text/);
    expect(() => parseIdFile('h', enc('id,name\n'))).toThrow(/has an id column but no rows/);
  });
});

describe('import progress', () => {
  it('redraws one bar on a terminal and ends the line', () => {
    let text = '';
    const p = createProgress({ isTTY: true, columns: 80, write: (t: string) => (text += t) }, 4000);
    p.update(1000);
    p.update(4000);
    p.finish();
    expect(text).toBe(
      `\r[########......................] 1000/4000 ids 25%\r[##############################] 4000/4000 ids 100%\n`,
    );
  });

  it('prints a plain line each tenth of the way when not a terminal', () => {
    const lines: string[] = [];
    const p = createProgress({ isTTY: false, write: (t: string) => lines.push(t) }, 50_000);
    for (let done = 1000; done <= 50_000; done += 1000) p.update(done);
    p.finish();
    expect(lines).toHaveLength(11);
    expect(lines[0]).toBe('1000/50000 ids sent (2%)\n');
    expect(lines.at(-1)).toBe('50000/50000 ids sent (100%)\n');
  });
});

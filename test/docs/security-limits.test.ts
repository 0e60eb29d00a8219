import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { validateConfig } from '../../packages/server/src/config/load.ts';
import { REPO_ROOT } from '../support/processes.ts';

const SECURITY = readFileSync(join(REPO_ROOT, 'SECURITY.md'), 'utf8');

interface LimitRow {
  limit: string;
  value: number;
  setBy: string;
}

/** The rows of the table under `## Limits`: limit | default | set by. */
function limitRows(): LimitRow[] {
  const section = SECURITY.split(/^## Limits$/m)[1]?.split(/^## /m)[0] ?? '';
  return section
    .split('\n')
    .filter((line) => line.startsWith('|'))
    .slice(2) // the header and its separator
    .map((line) => {
      const [limit = '', value = '', setBy = ''] = line
        .split('|')
        .slice(1, -1)
        .map((cell) => cell.trim());
      return { limit, value: Number(value.replaceAll(',', '')), setBy };
    });
}

/**
 * The value of a constant with a plain arithmetic initializer (`16 * 1024`, `100_000`), read
 * from its source file; anything else (a call, another constant) answers undefined.
 */
function constantValue(source: string, name: string): number | undefined {
  const match = new RegExp(`^(?:export )?const ${name}(?:: [^=]+)? = ([^;]+);`, 'm').exec(source);
  const expression = match?.[1]?.replaceAll('_', '').trim();
  if (expression === undefined || !/^[\d\s*+\-/()<>]+$/.test(expression)) return undefined;
  return Function(`"use strict"; return (${expression});`)() as number;
}

function configValue(path: string): unknown {
  // PostgreSQL storage so that storage.poolSize has its default too; nothing connects
  const config = validateConfig({ storage: { kind: 'postgres', url: 'postgresql://localhost/unused' } });
  return path.split('.').reduce<unknown>((at, key) => (at as Record<string, unknown>)?.[key], config);
}

describe('SECURITY.md', () => {
  it('every limit it names has the default it states, in the config or the named constant', () => {
    const rows = limitRows();
    expect(rows.length).toBeGreaterThan(40);
    const wrong: string[] = [];
    for (const row of rows) {
      const config = /^config `([\w.]+)`/.exec(row.setBy);
      const constant = /^`([A-Z][A-Z0-9_]*)` in `([^`]+)`$/.exec(row.setBy);
      let actual: unknown;
      if (config) actual = configValue(config[1]!);
      else if (constant) {
        actual = constantValue(readFileSync(join(REPO_ROOT, constant[2]!), 'utf8'), constant[1]!);
      } else {
        wrong.push(`${row.limit}: "set by" is neither config \`path\` nor \`CONSTANT\` in \`file\``);
        continue;
      }
      if (Number.isNaN(row.value) || actual !== row.value)
        wrong.push(`${row.limit}: SECURITY.md says ${row.value}, ${row.setBy} is ${String(actual)}`);
    }
    expect(wrong).toEqual([]);
  });

  it('names every MAX_ constant of the server and core packages', () => {
    const named = new Set(limitRows().map((r) => /`([A-Z][A-Z0-9_]*)`/.exec(r.setBy)?.[1]));
    const files = execFileSync('git', ['ls-files', 'packages/server/src', 'packages/core/src'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
    })
      .split('\n')
      .filter((f) => f.endsWith('.ts'));
    const missing: string[] = [];
    for (const file of files) {
      const source = readFileSync(join(REPO_ROOT, file), 'utf8');
      for (const [, name] of source.matchAll(/^(?:export )?const (MAX_[A-Z0-9_]+)\b/gm)) {
        if (constantValue(source, name!) !== undefined && !named.has(name))
          missing.push(`${name} in ${file}: add it to the Limits table of SECURITY.md`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('says how to report a vulnerability privately, not by an e-mail placeholder', () => {
    expect(SECURITY).toMatch(/private security advisory/i);
    expect(SECURITY).not.toMatch(/@example\.|security@/i);
  });
});

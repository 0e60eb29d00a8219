import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/processes.ts';

/** The design notes kept beside the project's issues, which a user of the repo never has. */
const PRIVATE_NOTES = /\b(?:DESIGN|REFERENCE|CLI|STYLE)\.md\b|\bDESIGN §/;
const SCANNED = /\.(?:md|ts|js|mjs|cjs|json|ya?ml|sh|service|env|txt)$/;

function repoFiles(): string[] {
  const out = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', '-z'], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
  });
  return out.split('\0').filter((f) => f !== '' && SCANNED.test(f) && f !== 'package-lock.json');
}

describe('the repo stands alone', () => {
  it('no doc, README, help text, program output or source cites the design notes kept outside it', () => {
    const files = repoFiles();
    expect(files).toContain('README.md');
    expect(files).toContain('docs/architecture.md');
    const hits: string[] = [];
    for (const file of files) {
      let text: string;
      try {
        text = readFileSync(join(REPO_ROOT, file), 'utf8');
      } catch {
        continue; // listed by git but deleted in the work tree
      }
      text.split('\n').forEach((line, i) => {
        if (PRIVATE_NOTES.test(line)) hits.push(`${file}:${i + 1}: ${line.trim()}`);
      });
    }
    expect(hits).toEqual([]);
  });
});

import { lstatSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startTestService } from '../support/service.ts';
import { testDir } from '../support/temp-dir.ts';

describe('the files keyferryd writes into its data dir', () => {
  it('listen.json and the demo token replace a symlink left at their temp name instead of writing through it (was: the token went into the file it pointed to)', async () => {
    const dataDir = testDir('keyferry-data-files-');
    const elsewhere = testDir('keyferry-elsewhere-');
    for (const name of ['listen.json', 'demo.token']) {
      writeFileSync(join(elsewhere, name), "not keyferryd's\n", { mode: 0o644 });
      symlinkSync(join(elsewhere, name), join(dataDir, `${name}.${process.pid}.tmp`));
    }
    const svc = await startTestService('sqlite', { dataDir });
    try {
      for (const name of ['listen.json', 'demo.token']) {
        expect(readFileSync(join(elsewhere, name), 'utf8'), name).toBe("not keyferryd's\n");
        expect(lstatSync(join(dataDir, name)).isFile(), name).toBe(true);
        expect(statSync(join(dataDir, name)).mode & 0o777, name).toBe(0o600);
      }
      expect(readFileSync(join(dataDir, 'demo.token'), 'utf8')).toBe(`${svc.token}\n`);
      expect(JSON.parse(readFileSync(join(dataDir, 'listen.json'), 'utf8')).api).toBe(svc.url);
      expect(readdirSync(dataDir).filter((name) => name.endsWith('.tmp'))).toEqual([]);
    } finally {
      await svc.stop();
    }
  });
});

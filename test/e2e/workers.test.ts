import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DaemonProcess, PROCESS_TEST_TIMEOUT_MS, startKeyferryd } from '../support/processes.ts';

/** The worker processes of a primary: its children, from /proc. */
function children(pid: number): number[] {
  return readdirSync('/proc')
    .filter((d) => /^[0-9]+$/.test(d))
    .filter((d) => {
      try {
        const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid;
      } catch {
        return false;
      }
    })
    .map(Number);
}

async function until<T>(what: string, probe: () => T | undefined): Promise<T> {
  for (let i = 0; i < 600; i++) {
    const value = probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`gave up waiting for ${what}`);
}

/** keyferryd with `workers: 2` (KEYFERRY_WORKERS): one primary, two workers on one SQLite. */
describe('keyferryd with two workers', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let work: string;
  let daemon: DaemonProcess;
  let primary: number;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-workers-'));
    daemon = await startKeyferryd(join(work, 'data'), { env: { KEYFERRY_WORKERS: '2' } });
    primary = daemon.child.pid!;
  });
  afterAll(async () => {
    await daemon?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('runs two workers behind one set of addresses, ready and counted together', async () => {
    expect(children(primary)).toHaveLength(2);
    const ready = await fetch(`${daemon.listen.api}/readyz`);
    expect(ready.status).toBe(200);
    // every request lands on one worker or the other; the aggregated count holds them all
    for (let i = 0; i < 6; i++) expect((await fetch(`${daemon.listen.api}/healthz`)).status).toBe(200);
    const metrics = await (await fetch(`${daemon.listen.api}/metrics`)).text();
    const healthz = metrics
      .split('\n')
      .filter((l) => l.startsWith('keyferry_http_requests_total{') && l.includes('route="/healthz"'))
      .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    expect(healthz).toBe(6);
    // figures read from the database are taken from one worker, not summed over both
    expect(metrics).toMatch(/^keyferry_plan_devices_max\{factory="demo"\} 50000$/m);
  });

  it('starts another worker when one is killed, on the same addresses', async () => {
    const [victim] = children(primary);
    process.kill(victim!, 'SIGKILL');
    const now = await until('a replacement worker', () => {
      const pids = children(primary);
      return pids.length === 2 && !pids.includes(victim!) ? pids : undefined;
    });
    expect(now).not.toContain(victim);
    expect(JSON.parse(readFileSync(join(work, 'data', 'listen.json'), 'utf8'))).toEqual(daemon.listen);
    expect((await fetch(`${daemon.listen.api}/readyz`)).status).toBe(200);
  });

  it('stops every worker on SIGTERM and removes listen.json', async () => {
    const workers = children(primary);
    expect(await daemon.stop()).toBe(0);
    expect(existsSync(join(work, 'data', 'listen.json'))).toBe(false);
    for (const pid of workers) expect(existsSync(`/proc/${pid}`)).toBe(false);
  });
});

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BINS, type DaemonProcess, REPO_ROOT, startKeyferryd } from '../support/processes.ts';

/**
 * Runs a program with its stdout a pipe whose reader has gone before the first write, as
 * `| head -3` leaves it once head has its lines: every write then fails with EPIPE.
 */
function runIntoClosedPipe(
  bin: keyof typeof BINS,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [BINS[bin], ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, KEYFERRY_DEBUG: '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (status) => resolvePromise({ status, stderr }));
  });
}

describe('a closed stdout ends every program quietly with exit 0 (was: unhandled write EPIPE)', () => {
  let work: string;
  let daemon: DaemonProcess;
  let cliEnv: NodeJS.ProcessEnv;
  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-epipe-'));
    daemon = await startKeyferryd(join(work, 'data'));
    const token = readFileSync(join(work, 'data', 'demo.token'), 'utf8').trim();
    cliEnv = {
      HOME: work,
      XDG_CONFIG_HOME: join(work, 'xdg'),
      KEYFERRY_SERVER: daemon.listen.api,
      KEYFERRY_TOKEN: token,
      KEYFERRY_FACTORY: 'demo',
    };
    // a few devices, so that the list has rows to write after the header
    const ids = Array.from({ length: 5 }, (_, i) => `0x04005001eee3ba1ee96e60047e57da0f688${i}`);
    const res = await fetch(`${daemon.listen.api}/ota/factories/demo/el2g/devices/`, {
      method: 'POST',
      headers: { 'osf-token': token, 'content-type': 'application/json' },
      body: JSON.stringify({ 'product-id': '935389312472', devices: ids }),
    });
    expect(res.status).toBe(200);
  });
  afterAll(async () => {
    await daemon?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it.each([
    ['keyferry', ['el2g', 'devices']],
    ['keyferry', ['el2g', 'devices', '--json']],
    ['keyferry', ['el2g', 'status']],
    ['keyferry', ['--help']],
    ['keyferryd', ['--help']],
    ['agent', ['--help']],
    ['sim', ['--help']],
  ] as const)('%s %s', { timeout: 120_000 }, async (bin, args) => {
    const res = await runIntoClosedPipe(bin, [...args], cliEnv);
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
  });

  it('a serving keyferryd whose stdout closes shuts down cleanly: exit 0, listen.json removed', {
    timeout: 120_000,
  }, async () => {
    const dataDir = join(work, 'served');
    const res = await runIntoClosedPipe('keyferryd', [], {
      KEYFERRY_DATA_DIR: dataDir,
      KEYFERRY_API_LISTEN: '127.0.0.1:0',
      KEYFERRY_DEVICE_LINK_LISTEN: '127.0.0.1:0',
      KEYFERRY_GATEWAY_LISTEN: '127.0.0.1:0',
      KEYFERRY_LOG_LEVEL: 'warn',
    });
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    expect(existsSync(join(dataDir, 'demo.token'))).toBe(true);
    expect(existsSync(join(dataDir, 'listen.json'))).toBe(false);
  });
});

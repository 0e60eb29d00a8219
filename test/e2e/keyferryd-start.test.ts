import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractSteps, WALKTHROUGH } from '../../scripts/walkthrough.ts';
import { REPO_ROOT, runBinAsync, startKeyferryd } from '../support/processes.ts';

/** A stale listen.json, as a killed keyferryd of an earlier run leaves it. */
const STALE_LISTEN = '{"api":"http://127.0.0.1:1","deviceLink":"127.0.0.1:2","gateway":"127.0.0.1:3"}\n';

function takePort(): Promise<{ server: Server; listen: string }> {
  return new Promise((resolvePromise) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      resolvePromise({
        server,
        listen: `127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`,
      });
    });
  });
}

const FREE_PORTS = {
  KEYFERRY_API_LISTEN: '127.0.0.1:0',
  KEYFERRY_DEVICE_LINK_LISTEN: '127.0.0.1:0',
  KEYFERRY_GATEWAY_LISTEN: '127.0.0.1:0',
};

describe('keyferryd start and stop, as the walkthrough waits for them', () => {
  let work: string;
  let taken: { server: Server; listen: string };
  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-start-'));
    taken = await takePort();
  });
  afterAll(() => {
    taken?.server.close();
    rmSync(work, { recursive: true, force: true });
  });

  it.each([
    ['KEYFERRY_API_LISTEN', 'api.listen', 'the management API'],
    ['KEYFERRY_DEVICE_LINK_LISTEN', 'deviceLink.listen', 'the device-link'],
    ['KEYFERRY_GATEWAY_LISTEN', 'gateway.listen', 'the device gateway'],
  ])(
    'EADDRINUSE on %s names the setting to change and leaves no listen.json (stale one included)',
    async (env, key, listener) => {
      const dataDir = join(work, `inuse-${env}`);
      mkdirSync(dataDir, { recursive: true });
      writeFileSync(join(dataDir, 'listen.json'), STALE_LISTEN);
      const res = await runBinAsync('keyferryd', [], {
        env: { KEYFERRY_DATA_DIR: dataDir, KEYFERRY_LOG_LEVEL: 'warn', ...FREE_PORTS, [env]: taken.listen },
      });
      expect(res.status).toBe(2);
      expect(res.stderr).toBe(
        `ERROR: keyferryd cannot start: cannot listen on ${taken.listen} for ${listener}: the address is ` +
          `already in use (another keyferryd, or an earlier one still running?); stop what holds it, or set ` +
          `${env} (or ${key} in the config file) to another host:port (port 0 picks a free one)\n`,
      );
      expect(existsSync(join(dataDir, 'listen.json'))).toBe(false);
    },
    120_000,
  );

  it('removes listen.json when it shuts down', { timeout: 120_000 }, async () => {
    const dataDir = join(work, 'shutdown');
    const daemon = await startKeyferryd(dataDir);
    expect(existsSync(join(dataDir, 'listen.json'))).toBe(true);
    expect(await daemon.stop()).toBe(0);
    expect(existsSync(join(dataDir, 'listen.json'))).toBe(false);
  });

  it('the readiness loop of docs/walkthrough.md stops when keyferryd exits at start, even with a stale listen.json', {
    timeout: 120_000,
  }, async () => {
    const steps = extractSteps(readFileSync(WALKTHROUGH, 'utf8')).map((s) => s.command);
    const start = steps.find((c) => c.includes('keyferryd >'));
    const wait = steps.find((c) => c.startsWith('until '));
    expect(start).toBeDefined();
    expect(wait).toBeDefined();
    const cwd = join(work, 'walkthrough');
    mkdirSync(join(cwd, 'data'), { recursive: true });
    writeFileSync(join(cwd, 'data/listen.json'), STALE_LISTEN);
    const child = spawn('bash', ['-c', `set -euo pipefail\n${start}\n${wait}\n`], {
      cwd,
      env: {
        ...process.env,
        PATH: `${join(REPO_ROOT, 'node_modules/.bin')}:${process.env.PATH}`,
        KEYFERRY_DATA_DIR: join(cwd, 'data'),
        KEYFERRY_LOG_LEVEL: 'warn',
        ...FREE_PORTS,
        KEYFERRY_API_LISTEN: taken.listen,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    // a hang is the failure: give the loop a bound well past keyferryd's start, then stop it
    const guard = setTimeout(() => child.kill('SIGKILL'), 90_000);
    const code = await new Promise<number | null>((r) => child.on('close', (c) => r(c)));
    clearTimeout(guard);
    expect(code, output).not.toBeNull();
    expect(code, output).not.toBe(0);
    expect(output).toContain('KEYFERRY_API_LISTEN');
    expect(output).not.toContain('"api":"http://127.0.0.1:1"');
  });

  it('keyferryd says where the demo token is and what to run next, never the token itself', {
    timeout: 120_000,
  }, async () => {
    const dataDir = join(work, 'restart');
    const first = await startKeyferryd(dataDir);
    await first.stop();
    const token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
    const tokenFile = join(dataDir, 'demo.token');
    expect(first.stdout()).toContain(`Demo factory: demo (created; its admin token is in ${tokenFile})\n`);
    expect(first.stdout()).toContain(
      `Next: keyferry login --server ${first.listen.api} --token-file ${tokenFile}\n`,
    );
    expect(first.stdout() + first.stderr()).not.toContain(token.slice('kf_0123456789abcdef_'.length));
    const second = await startKeyferryd(dataDir);
    try {
      while (!second.stdout().includes('Device gateway:')) await new Promise((r) => setTimeout(r, 20));
      expect(second.stdout()).toContain(`Demo factory: demo (its admin token is in ${tokenFile})\n`);
      expect(second.stdout()).toContain(
        `Next: keyferry login --server ${second.listen.api} --token-file ${tokenFile}\n`,
      );
      expect(second.stdout() + second.stderr()).not.toContain(token.slice('kf_0123456789abcdef_'.length));
    } finally {
      await second.stop();
    }
  });
});

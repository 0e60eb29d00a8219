import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setupDeviceGateway } from '../../../test/support/device-link.ts';
import {
  type DaemonProcess,
  PROCESS_TEST_TIMEOUT_MS,
  runBinAsync,
  startKeyferryd,
} from '../../../test/support/processes.ts';

describe('keyferry-sim fleet against the real keyferryd', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let work: string;
  let dataDir: string;
  let daemon: DaemonProcess;
  let token: string;
  const env = () => ({
    KEYFERRY_DATA_DIR: dataDir,
    KEYFERRY_SERVER: daemon.listen.api,
    KEYFERRY_FACTORY: 'demo',
    KEYFERRY_TOKEN: token,
  });
  const api = async (path: string) => {
    const res = await fetch(`${daemon.listen.api}/ota/factories/demo/${path}`, {
      headers: { 'osf-token': token },
    });
    expect(res.status, path).toBe(200);
    return res.json() as Promise<any>;
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-sim-fleet-'));
    dataDir = join(work, 'data');
    daemon = await startKeyferryd(dataDir);
    token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
    await setupDeviceGateway(daemon.listen.api, token);
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('provisions 5 devices: allow-listed, gateway pair PROVISIONING_COMPLETED, sota.toml written', async () => {
    const dir = join(work, 'fleet');
    const res = await runBinAsync('sim', ['fleet', '--devices', '5', '--dir', dir, '--concurrency', '3'], {
      env: env(),
    });
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    expect(res.stdout).toMatch(/^Provisioned: 5 of 5 devices\nFailed: 0\n/);
    expect(res.stdout).toMatch(/^Time: [0-9.]+ s \([0-9.]+ devices\/s\)$/m);
    expect(res.stdout).toMatch(/^Latency: p50 \d+ ms, p99 \d+ ms$/m);
    const homes = readdirSync(dir).filter((d) => d.startsWith('device-'));
    expect(homes).toEqual(['device-1', 'device-2', 'device-3', 'device-4', 'device-5']);
    const uids = homes.map((h) => `0x${readFileSync(join(dir, h, 'se', 'uid'), 'utf8').trim()}`);
    const allowed = (await api('el2g/devices/')) as { id: string }[];
    expect(allowed).toHaveLength(5);
    const first = uids[0]!;
    const provisionings = await api(`el2g-proxy/rtp/devices/${first}/secure-object-provisionings`);
    const states = (provisionings.content as { secureObjectName: string; provisioningState: string }[])
      .map((p) => `${p.secureObjectName}=${p.provisioningState}`)
      .sort();
    expect(states).toEqual([
      'fio-device-gateway-ca-kp=PROVISIONING_COMPLETED',
      'fio-device-gateway-ca=PROVISIONING_COMPLETED',
    ]);
    expect(readFileSync(join(dir, 'device-1', 'sota', 'sota.toml'), 'utf8')).toContain('tls_pkey_path');
  }, 30_000);

  it('--renew: a pass rotates nobody outside the window; with --force every device into the other slot', async () => {
    const dir = join(work, 'fleet');
    const idle = await runBinAsync('sim', ['fleet', '--renew', '--dir', dir], { env: env() });
    expect(idle.stderr).toBe('');
    expect(idle.status).toBe(0);
    expect(idle.stdout).toMatch(/^Renewed: 5 of 5 devices\nFailed: 0\n[\s\S]*\nRotated: 0\n$/);
    const res = await runBinAsync(
      'sim',
      ['fleet', '--renew', '--force', '--dir', dir, '--concurrency', '3'],
      {
        env: env(),
      },
    );
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    expect(res.stdout).toMatch(/\nRotated: 5\n$/);
    for (const home of readdirSync(dir).filter((d) => d.startsWith('device-'))) {
      const sota = readFileSync(join(dir, home, 'sota', 'sota.toml'), 'utf8');
      expect(sota, home).toContain('SE_83010042.key.pem');
      expect(existsSync(join(dir, home, 'se', 'SE_83000042.key.pem')), home).toBe(false);
    }
  }, 60_000);

  it('refuses without a token: one ERROR line naming what to set, nothing allow-listed or made', async () => {
    const before = (await api('el2g/devices/')) as unknown[];
    const dir = join(work, 'no-token');
    const res = await runBinAsync('sim', ['fleet', '--devices', '2', '--dir', dir], {
      env: { ...env(), KEYFERRY_TOKEN: '' },
    });
    expect(res.status).not.toBe(0);
    expect(res.stdout).toBe('');
    expect(res.stderr).toBe('ERROR: no API token: pass -t/--token or set KEYFERRY_TOKEN\n');
    expect(await api('el2g/devices/')).toEqual(before);
    expect(() => readdirSync(dir)).toThrow();
  });
});

import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, createServer } from 'node:net';
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
import { ManagementApi } from '../src/fleet/management-api.ts';
import { FleetStopped, RENEW_ATTEMPTS, runFleet } from '../src/fleet/run.ts';
import { loadOrCreateVendorCa } from '../src/se05x/vendor-ca.ts';

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

  it('--renew with the device-link down: each device tried a bounded number of times, failures named by UID', async () => {
    const dir = join(work, 'fleet');
    const uids = readdirSync(dir)
      .filter((d) => d.startsWith('device-'))
      .map((h) => `0x${readFileSync(join(dir, h, 'se', 'uid'), 'utf8').trim()}`);
    // a device-link that hangs up on every connection: a transient failure each time
    let connections = 0;
    const down = createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((r) => down.listen(0, '127.0.0.1', r));
    try {
      const res = await runBinAsync(
        'sim',
        [
          'fleet',
          '--renew',
          '--dir',
          dir,
          '--json',
          '--concurrency',
          '5',
          '--device-link',
          `127.0.0.1:${(down.address() as AddressInfo).port}`,
        ],
        { env: env() },
      );
      expect(res.stderr).toBe('ERROR: 5 of 5 devices failed; the summary lists why\n');
      expect(res.status).toBe(1);
      const summary = JSON.parse(res.stdout) as { failures: { uid: string; reason: string }[] };
      expect(summary.failures.map((f) => f.uid).sort()).toEqual([...uids].sort());
      for (const f of summary.failures) expect(f.reason).toMatch(/cannot reach/);
      expect(connections).toBe(uids.length * RENEW_ATTEMPTS);
    } finally {
      down.close();
    }
  });

  it('a run a later batch stops still counts what the earlier batches did, their registrations finished', async () => {
    const dir = join(work, 'stopped-fleet');
    // device-3 (the second batch) cannot be made: its secure element directory is taken
    mkdirSync(join(dir, 'device-3', 'se'), { recursive: true });
    writeFileSync(join(dir, 'device-3', 'se', 'left-over'), '');
    const api = new ManagementApi({ server: daemon.listen.api, factory: 'demo', token });
    const rootCrt = join(work, 'stopped-root.crt');
    writeFileSync(rootCrt, (await api.rootCertificate()) as string);
    const target = {
      api,
      product: '935389312472',
      repoId: await api.repoId(),
      subdomain: await api.subdomain(),
      deviceLink: daemon.listen.deviceLink as string,
      deviceLinkCa: join(dataDir, 'service-ca.pem'),
      rootCrt,
    };
    const stopped = await runFleet({
      target,
      vendor: await loadOrCreateVendorCa(join(dataDir, 'sim')),
      count: 4,
      dir,
      concurrency: 2,
      batchSize: 2,
    }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(stopped).toBeInstanceOf(FleetStopped);
    const { summary, message } = stopped as FleetStopped;
    expect(message).toBe(
      `${join(dir, 'device-3', 'se')} is not empty; a soft secure element needs a new or empty directory`,
    );
    expect(summary).toMatchObject({ devices: 4, provisioned: 2, failed: 0, failures: [], dir });
    expect(summary.latencyMs.p50).toEqual(expect.any(Number));
    for (const home of ['device-1', 'device-2']) {
      expect(readFileSync(join(dir, home, 'sota', 'sota.toml'), 'utf8'), home).toContain('tls_pkey_path');
    }
  });

  it('a run that stops prints the summary of what it did before its ERROR line', async () => {
    const dir = join(work, 'stopped-cli');
    mkdirSync(join(dir, 'device-2', 'se'), { recursive: true });
    writeFileSync(join(dir, 'device-2', 'se', 'left-over'), '');
    const res = await runBinAsync('sim', ['fleet', '--devices', '2', '--dir', dir], { env: env() });
    expect(res.status).toBe(1);
    expect(res.stdout).toMatch(
      new RegExp(
        `^Provisioned: 0 of 2 devices\nFailed: 0\nTime: [0-9.]+ s \\([0-9.]+ devices/s\\)\n` +
          `Latency: p50 -, p99 -\nSecure elements: ${dir}\n$`,
      ),
    );
    expect(res.stderr).toBe(
      `ERROR: the run stopped after 0 of 2 devices: ${join(dir, 'device-2', 'se')} is not empty; ` +
        'a soft secure element needs a new or empty directory; the summary counts what was done\n',
    );
    const json = await runBinAsync('sim', ['fleet', '--devices', '2', '--dir', dir, '--json'], {
      env: env(),
    });
    expect(json.status).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ devices: 2, provisioned: 0, failed: 0, dir });
  });

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

describe('keyferry-sim fleet refusals before any device', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let work: string;
  let env: NodeJS.ProcessEnv;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-sim-fleet-refusals-'));
    mkdirSync(join(work, 'data'));
    writeFileSync(join(work, 'data', 'service-ca.pem'), 'not used: every run here stops before TLS\n');
    env = {
      KEYFERRY_DATA_DIR: join(work, 'data'),
      KEYFERRY_SERVER: '',
      KEYFERRY_FACTORY: 'demo',
      KEYFERRY_TOKEN: 'unused-token',
    };
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('--renew refuses a --dir that does not exist or holds no fleet, and makes nothing', async () => {
    const mistyped = join(work, 'fleet-typo');
    const missing = await runBinAsync('sim', ['fleet', '--renew', '--dir', mistyped], { env });
    expect(missing).toEqual({
      status: 1,
      stdout: '',
      stderr: `ERROR: ${mistyped} does not exist; pass the --dir of a previous fleet run\n`,
    });
    expect(existsSync(mistyped)).toBe(false);
    const empty = join(work, 'empty');
    mkdirSync(empty);
    const none = await runBinAsync('sim', ['fleet', '--renew', '--dir', empty], { env });
    expect(none).toEqual({
      status: 1,
      stdout: '',
      stderr: `ERROR: ${empty} holds no fleet (no device-* directories); pass the --dir of a previous fleet run\n`,
    });
    expect(readdirSync(empty)).toEqual([]);
  });

  it('refuses --force without --renew as a usage error (exit 2), before anything is contacted or made', async () => {
    const dir = join(work, 'forced');
    const res = await runBinAsync('sim', ['fleet', '--devices', '1', '--force', '--dir', dir], { env });
    expect(res).toEqual({
      status: 2,
      stdout: '',
      stderr:
        'ERROR: --force only applies with --renew (it rotates every device of a rotation pass); ' +
        'drop --force, or pass --renew --dir DIR\n',
    });
    expect(existsSync(dir)).toBe(false);
  });

  it('refuses a factory without a root certificate before making anything (no empty root.crt)', async () => {
    // the management API of a factory whose PKI is not made yet: no root-crt
    const answers: Record<string, unknown> = {
      '/ota/factories/': [{ name: 'demo', 'repo-id': 'repo-1' }],
      '/ota/factories/demo/el2g/overview/': { subdomain: 'sub.example' },
      '/ota/factories/demo/certs/': {},
    };
    const service = createHttpServer((req, res) => {
      const answer = answers[req.url ?? ''];
      res.writeHead(answer === undefined ? 404 : 200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answer ?? { detail: 'not here' }));
    });
    await new Promise<void>((r) => service.listen(0, '127.0.0.1', r));
    const dir = join(work, 'no-root');
    try {
      const res = await runBinAsync(
        'sim',
        [
          'fleet',
          '--devices',
          '1',
          '--dir',
          dir,
          '--server',
          `http://127.0.0.1:${(service.address() as AddressInfo).port}`,
          '--device-link',
          '127.0.0.1:1',
        ],
        { env },
      );
      expect(res).toEqual({
        status: 1,
        stdout: '',
        stderr:
          'ERROR: factory demo has no root certificate, which every device needs (its root.crt, ' +
          'ROOT_CRT) to trust the device gateway; make it with keyferry keys ca create and ' +
          'keyferry el2g config-device-gateway, then run again\n',
      });
      expect(existsSync(dir)).toBe(false);
    } finally {
      service.close();
    }
  });

  it('refuses a --server that is not a URL at once', async () => {
    const dir = join(work, 'bad-url');
    const res = await runBinAsync(
      'sim',
      [
        'fleet',
        '--devices',
        '1',
        '--dir',
        dir,
        '--server',
        'http://exa mple:80',
        '--device-link',
        '127.0.0.1:1',
      ],
      { env },
    );
    expect(res).toEqual({
      status: 1,
      stdout: '',
      stderr:
        'ERROR: --server http://exa mple:80 is not a URL; pass the management API as http(s)://HOST:PORT\n',
    });
    expect(existsSync(dir)).toBe(false);
  });

  it('names a listen.json that is not JSON and what to do', async () => {
    const data = join(work, 'broken-data');
    mkdirSync(data);
    const broken = '{"api": "http://127.0.0.1:1"';
    writeFileSync(join(data, 'listen.json'), broken);
    const why = (() => {
      try {
        return JSON.parse(broken);
      } catch (error) {
        return (error as Error).message;
      }
    })();
    const res = await runBinAsync('sim', ['fleet', '--devices', '1', '--dir', join(work, 'unused')], {
      env: { ...env, KEYFERRY_DATA_DIR: data },
    });
    expect(res).toEqual({
      status: 1,
      stdout: '',
      stderr:
        `ERROR: ${join(data, 'listen.json')} is not valid JSON (${why}); ` +
        'pass --server URL and --device-link HOST:PORT, or restart keyferryd to write it again\n',
    });
  });
});

import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CRASH_POINTS } from '../../packages/agent/src/register/crash-point.ts';
import { runAgentAsync, spawnAgent } from '../../packages/agent/test/support/agent-bin.ts';
import { fromPem, parseCertificate } from '../../packages/core/src/index.ts';
import {
  gatewayCall as gatewayCallWith,
  setUpFactoryPki,
  sotaPair as sotaPairOf,
} from '../support/device-link.ts';
import {
  type DaemonProcess,
  PROCESS_TEST_TIMEOUT_MS,
  type RunResult,
  runBinAsync,
  startKeyferryd,
} from '../support/processes.ts';
import { createSofthsmEnv, type SofthsmEnv } from '../support/softhsm.ts';

const PRODUCT = '935389312472';

/** A simulated device with a soft secure element (files), provisioned by auto-register. */
interface Device {
  uid: string;
  seDir: string;
  sotaDir: string;
  envFile: string;
  agent(args: string[], env?: NodeJS.ProcessEnv): ReturnType<typeof runAgentAsync>;
}

describe('keyferry-agent renew: two-slot rotation of the gateway pair against the real keyferryd', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  let work: string;
  let dataDir: string;
  let daemon: DaemonProcess;
  let repoId: string;
  let subdomain: string;
  let cli: (args: string[]) => Promise<RunResult>;
  const tokens: SofthsmEnv[] = [];

  async function provisionedDevice(name: string): Promise<Device> {
    const seDir = join(work, name, 'se');
    const created = await runBinAsync('sim', ['se05x', 'create', '--product', PRODUCT, '--dir', seDir], {
      env: { KEYFERRY_DATA_DIR: dataDir },
    });
    expect(created.stderr).toBe('');
    const uid = created.stdout.trim();
    const sotaDir = join(work, name, 'sota');
    mkdirSync(sotaDir, { recursive: true });
    const envFile = join(work, name, 'env');
    writeFileSync(
      envFile,
      [
        `REPOID=${repoId}`,
        `EL2GO_HOSTNAME=${subdomain}`,
        `EL2GO_CONNECT_ADDR=${daemon.listen.deviceLink}`,
        `DEVICE_LINK_CA=${join(dataDir, 'service-ca.pem')}`,
        `SOTA_DIR=${sotaDir}`,
        `ROOT_CRT=${join(work, 'root.crt')}`,
        'DAEMON_INTERVAL=1',
        'AKLITE_START_CMD=true',
        'SE_BACKEND=soft',
        `SE_DIR=${seDir}`,
        '',
      ].join('\n'),
    );
    const device: Device = {
      uid,
      seDir,
      sotaDir,
      envFile,
      agent: (args, env = {}) => runAgentAsync([...args, '--env-file', envFile], env),
    };
    expect((await cli(['el2g', 'devices', 'add', PRODUCT, uid])).status).toBe(0);
    const first = await device.agent(['auto-register', '--once']);
    expect(first.stderr).toBe('');
    expect(first.status).toBe(0);
    return device;
  }

  /** The key and certificate files sota.toml names now. */
  const sotaPair = (device: Device) => sotaPairOf(device.sotaDir);

  /** GET /device at the device gateway with a key and certificate (PEM files). */
  const gatewayCall = (pair: { key: string; cert: string }) =>
    gatewayCallWith({ gateway: daemon.listen.gateway!, repoId, rootCrt: join(work, 'root.crt'), pair });

  /** Copies of the pair in use, to try it at the gateway once it is replaced. */
  function keepCopy(device: Device, name: string): { key: string; cert: string } {
    const now = sotaPair(device);
    const copy = { key: join(work, `${name}.key.pem`), cert: join(work, `${name}.pem`) };
    copyFileSync(now.key, copy.key);
    copyFileSync(now.cert, copy.cert);
    return copy;
  }

  async function expectConverged(device: Device, old: { key: string; cert: string }): Promise<void> {
    const pair = sotaPair(device);
    expect(pair.key).toContain('SE_83010042');
    // only the new slot is left in the secure element
    expect(existsSync(join(device.seDir, 'SE_83000042.key.pem'))).toBe(false);
    expect(existsSync(join(device.seDir, 'SE_83000043.pem'))).toBe(false);
    const accepted = await gatewayCall(pair);
    expect(accepted.status, JSON.stringify(accepted.body)).toBe(200);
    const refused = await gatewayCall(old);
    expect(refused.body.code).toBe('certificate_revoked');
    const show = await cli(['el2g', 'devices', 'show', device.uid]);
    expect(show.stdout).toMatch(/fio-device-gateway-ca {5}CERTIFICATE {2}PROVISIONING_COMPLETED\n/);
  }

  /** `keyferry-agent daemon` for a device, its output collected; stop() ends it with SIGTERM. */
  function startDaemon(device: Device) {
    const child = spawnAgent(['daemon', '--env-file', device.envFile]);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d) => (stdout += d));
    child.stderr?.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    return {
      stdout: () => stdout,
      stderr: () => stderr,
      /** Polls the output until `done` holds (state, not time); gives up after `limitMs`. */
      async until(done: (out: string) => boolean, limitMs: number): Promise<void> {
        for (let waited = 0; waited < limitMs && !done(stdout); waited += 100) {
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      },
      stop(): Promise<number | null> {
        child.kill('SIGTERM');
        return exited;
      },
    };
  }

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-e2e-renew-'));
    dataDir = join(work, 'data');
    daemon = await startKeyferryd(dataDir);
    const token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
    cli = (args) =>
      runBinAsync('keyferry', ['--server', daemon.listen.api, '-t', token, '-f', 'demo', ...args], {
        env: { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg') },
      });
    await setUpFactoryPki(cli, join(work, 'pki'));
    writeFileSync(join(work, 'root.crt'), (await cli(['keys', 'ca', 'show', '--just-root'])).stdout);
    subdomain = /^# Subdomain: (\S+)$/m.exec((await cli(['el2g', 'status'])).stdout)?.[1] ?? '';
    repoId = /^demo {2}(\S+)$/m.exec((await cli(['factories'])).stdout)?.[1] ?? '';
    expect(repoId).not.toBe('');
  });

  afterAll(async () => {
    await daemon?.stop();
    for (const t of tokens) t.cleanup();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('outside the window it does nothing; --force rotates into the other slot, the old certificate is revoked', async () => {
    const device = await provisionedDevice('device-a');
    const idle = await device.agent(['renew', '--once']);
    expect(idle.stderr).toBe('');
    expect(idle.status).toBe(0);
    expect(idle.stdout).toMatch(/renewal due from \d{4}-/);
    expect(idle.stdout).toContain('Nothing to do: the certificate is not due for renewal\n');
    const old = keepCopy(device, 'device-a-old');
    expect((await gatewayCall(old)).status).toBe(200);

    const res = await device.agent(['renew', '--force', '--once']);
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    expect(res.stdout).toContain(
      'fio-device-gateway-ca-kp: generated key SE_83010042 in the secure element\n',
    );
    expect(res.stdout).toMatch(
      /fio-device-gateway-ca: renewed with the certificate in SE_83000043, certificate serial/,
    );
    expect(res.stdout).toContain('fio-device-gateway-ca: stored certificate as SE_83010043\n');
    expect(res.stdout).toContain('Deleted the old SE_83000042 and SE_83000043\n');
    expect(res.stdout).toContain('Rotation complete\n');
    await expectConverged(device, old);

    // a rotation back lands in the primary slot again
    const back = await device.agent(['renew', '--force', '--once']);
    expect(back.status).toBe(0);
    expect(sotaPair(device).key).toContain('SE_83000042');
    expect((await gatewayCall(sotaPair(device))).status).toBe(200);
  });

  for (const point of CRASH_POINTS) {
    it(`SIGKILL ${point}: the device still connects with the pair sota.toml names, and the next run converges`, async () => {
      const device = await provisionedDevice(`device-${point}`);
      const old = keepCopy(device, `device-${point}-old`);
      const crashed = await device.agent(['renew', '--force', '--once'], { KEYFERRY_AGENT_CRASH_AT: point });
      expect(crashed.signal, crashed.stdout + crashed.stderr).toBe('SIGKILL');
      const connects = await gatewayCall(sotaPair(device));
      expect(connects.status, JSON.stringify(connects.body)).toBe(200);

      const rerun = await device.agent(['renew', '--once']);
      expect(rerun.stderr).toBe('');
      expect(rerun.status).toBe(0);
      await expectConverged(device, old);
    });
  }

  it('a certificate in use that was revoked (deleted from the allow-list, added again) is replaced through the vendor identity, also after a crash', async () => {
    for (const crash of [undefined, 'after-enroll'] as const) {
      const device = await provisionedDevice(`device-revoked-${crash ?? 'clean'}`);
      const old = keepCopy(device, `device-revoked-${crash ?? 'clean'}-old`);
      expect((await cli(['el2g', 'devices', 'delete', PRODUCT, device.uid])).status).toBe(0);
      expect((await cli(['el2g', 'devices', 'add', PRODUCT, device.uid])).status).toBe(0);
      expect((await gatewayCall(old)).body.code).toBe('certificate_revoked');
      if (crash) {
        const crashed = await device.agent(['renew', '--once'], { KEYFERRY_AGENT_CRASH_AT: crash });
        expect(crashed.signal, crashed.stdout + crashed.stderr).toBe('SIGKILL');
      }
      // not due by its dates: what makes it due is that the service holds it no longer
      const res = await device.agent(['renew', '--once']);
      expect(res.stderr).toBe('');
      expect(res.status).toBe(0);
      if (crash) {
        expect(res.stdout).toContain('fio-device-gateway-ca: finishing the rotation a previous run began');
        expect(res.stdout).toMatch(
          /fio-device-gateway-ca: renewed with the vendor identity, certificate serial/,
        );
      } else {
        expect(res.stdout).toMatch(
          /fio-device-gateway-ca: the certificate in use \(serial [0-9a-f]+\) is not the service's live one \(none: revoked\); new key in SE_83010042\n/,
        );
        expect(res.stdout).toMatch(
          /fio-device-gateway-ca: enrolled with the vendor identity, certificate serial/,
        );
      }
      expect(res.stdout).toContain('Rotation complete\n');
      await expectConverged(device, old);
    }
  });

  it('daemon mode finishes a rotation a crashed run began, then keeps the new pair; SIGTERM ends it', async () => {
    const device = await provisionedDevice('device-daemon');
    const old = keepCopy(device, 'device-daemon-old');
    const crashed = await device.agent(['renew', '--force', '--once'], {
      KEYFERRY_AGENT_CRASH_AT: 'after-enroll',
    });
    expect(crashed.signal).toBe('SIGKILL');
    const run = startDaemon(device);
    try {
      // wait for state, not for time: the daemon's log says the rotation is complete
      await run.until((out) => out.includes('Rotation complete\n'), 60_000);
      expect(run.stdout(), run.stderr()).toContain(
        'fio-device-gateway-ca: finishing the rotation a previous run began',
      );
      expect(run.stdout()).toContain('Rotation complete\n');
      await expectConverged(device, old);
      // the next check finds nothing due
      await run.until((out) => /renewal due from .*\n[\s\S]*renewal due from/.test(out), 60_000);
      expect(run.stdout()).toMatch(/renewal due from/);
    } finally {
      expect(await run.stop()).toBe(0);
    }
    expect(run.stderr()).toBe('');
    expect(sotaPair(device).key).toContain('SE_83010042');
  });

  it('on a PKCS#11 token (SoftHSM2): the new pair gets ids 06/07, sota.toml names them, then 01/03 again', async () => {
    const softhsm = createSofthsmEnv({ setProcessEnv: false });
    tokens.push(softhsm);
    const created = await runBinAsync('sim', ['se05x', 'create', '--product', PRODUCT, '--pkcs11'], {
      env: { SOFTHSM2_CONF: softhsm.conf, KEYFERRY_DATA_DIR: dataDir },
    });
    expect(created.stderr).toBe('');
    const uid = created.stdout.trim();
    const sotaDir = join(work, 'device-p11', 'sota');
    mkdirSync(sotaDir, { recursive: true });
    const envFile = join(work, 'device-p11', 'env');
    writeFileSync(
      envFile,
      [
        `REPOID=${repoId}`,
        `EL2GO_HOSTNAME=${subdomain}`,
        `EL2GO_CONNECT_ADDR=${daemon.listen.deviceLink}`,
        `DEVICE_LINK_CA=${join(dataDir, 'service-ca.pem')}`,
        `PKCS11_MODULE=${softhsm.module}`,
        `SOTA_DIR=${sotaDir}`,
        `ROOT_CRT=${join(work, 'root.crt')}`,
        'DAEMON_INTERVAL=1',
        'AKLITE_START_CMD=true',
        '',
      ].join('\n'),
    );
    const agent = (args: string[]) =>
      runAgentAsync([...args, '--env-file', envFile], { SOFTHSM2_CONF: softhsm.conf });
    expect((await cli(['el2g', 'devices', 'add', PRODUCT, uid])).status).toBe(0);
    expect((await agent(['auto-register', '--once'])).status).toBe(0);
    const sota = () => readFileSync(join(sotaDir, 'sota.toml'), 'utf8');
    expect(sota()).toContain('tls_pkey_id = "01"\ntls_clientcert_id = "03"\n');

    const res = await agent(['renew', '--force', '--once']);
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    expect(res.stdout).toMatch(/renewed with the certificate in SE_83000043, certificate serial/);
    expect(res.stdout).toContain('Deleted the old SE_83000042 and SE_83000043\n');
    expect(sota()).toContain('tls_pkey_id = "06"\ntls_clientcert_id = "07"\n');
    const show = await cli(['el2g', 'devices', 'show', uid]);
    expect(show.stdout).toMatch(/fio-device-gateway-ca {5}CERTIFICATE {2}PROVISIONING_COMPLETED\n/);

    // auto-register at the next boot keeps the rotated pair
    const boot = await agent(['auto-register', '--once']);
    expect(boot.status).toBe(0);
    expect(boot.stdout).toContain(
      'fio-device-gateway-ca-kp: key SE_83010042 already in the secure element, kept\n',
    );
    expect(sota()).toContain('tls_pkey_id = "06"\n');

    const back = await agent(['renew', '--force', '--once']);
    expect(back.status).toBe(0);
    expect(back.stdout).toMatch(/renewed with the certificate in SE_83010043, certificate serial/);
    expect(sota()).toContain('tls_pkey_id = "01"\ntls_clientcert_id = "03"\n');
  });

  // last in this file: it makes the factory's gateway certificates short-lived
  it('a device provisioned with a 2-minute certificate renews itself in daemon mode into the other slot; the old certificate is refused after the report', async () => {
    const set = await cli([
      'el2g',
      'certs',
      'set-validity',
      'fio-device-gateway-ca',
      '--validity',
      '2m',
      '--renewal-window',
      '90s',
    ]);
    expect(set.stderr).toBe('');
    expect(set.stdout).toBe(
      'fio-device-gateway-ca: first certificates 120s, renewed 31536000s, renewal from 90s before expiry\n',
    );
    const device = await provisionedDevice('device-short');
    const first = parseCertificate(fromPem(readFileSync(sotaPair(device).cert, 'utf8'), 'CERTIFICATE'));
    // notBefore is backdated a minute; the certificate lives 2 minutes from its issuance
    expect(first.notAfter.getTime() - first.notBefore.getTime()).toBe(180_000);
    const old = keepCopy(device, 'device-short-old');
    expect((await gatewayCall(old)).status).toBe(200);

    const run = startDaemon(device);
    try {
      // wait for state, not for time: nothing forces it, the window comes and the daemon renews
      await run.until((out) => out.includes('Rotation complete\n'), 150_000);
      expect(run.stdout(), run.stderr()).toContain(
        'fio-device-gateway-ca-kp: generated key SE_83010042 in the secure element\n',
      );
      expect(run.stdout()).toContain('Rotation complete\n');
      await expectConverged(device, old);
      const renewed = parseCertificate(fromPem(readFileSync(sotaPair(device).cert, 'utf8'), 'CERTIFICATE'));
      expect(renewed.notAfter.getTime() - first.notAfter.getTime()).toBeGreaterThan(300 * 86_400_000);
    } finally {
      expect(await run.stop()).toBe(0);
    }
    expect(run.stderr()).toBe('');
  });
});

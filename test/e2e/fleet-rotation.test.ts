import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gatewayCall, setUpFactoryPki, sotaPair } from '../support/device-link.ts';
import {
  type DaemonProcess,
  PROCESS_TEST_TIMEOUT_MS,
  type RunResult,
  runBinAsync,
  startKeyferryd,
} from '../support/processes.ts';

/** Issue 15's fleet rotation: a whole group rotated by the operator, no device lost. */
const FLEET_DEVICES = Number(process.env.KEYFERRY_ROTATION_TEST_DEVICES ?? 500);
const PRODUCT = '935389312472';
const GROUP = `fio-${PRODUCT}`;
const DAY_MS = 86_400_000;

interface Expiring {
  certificates: Array<{
    group: string;
    deviceId: string;
    serial: string;
    notAfter: string;
    rotationRequested: boolean;
  }>;
  truncated: boolean;
}

describe(`el2g devices rotate --group: ${FLEET_DEVICES} devices`, {
  timeout: PROCESS_TEST_TIMEOUT_MS * 3,
}, () => {
  let work: string;
  let dataDir: string;
  let fleetDir: string;
  let daemon: DaemonProcess;
  let repoId: string;
  let cli: (args: string[]) => Promise<RunResult>;
  let sim: (args: string[]) => Promise<RunResult>;

  const homes = () =>
    readdirSync(fleetDir)
      .filter((d) => d.startsWith('device-'))
      .map((d) => join(fleetDir, d));
  const expiring = async (within: string): Promise<Expiring> => {
    const res = await cli(['el2g', 'certs', 'expiring', '--within', within, '--json']);
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    return JSON.parse(res.stdout) as Expiring;
  };
  /** Every device's pair in use at the gateway: the status each one gets. */
  const gatewayStatuses = async (
    pairs: Array<{ key: string; cert: string }>,
  ): Promise<Map<number, number>> => {
    const counts = new Map<number, number>();
    for (let i = 0; i < pairs.length; i += 16) {
      const answers = await Promise.all(
        pairs.slice(i, i + 16).map((pair) =>
          gatewayCall({
            gateway: daemon.listen.gateway!,
            repoId,
            rootCrt: join(fleetDir, 'root.crt'),
            pair,
          }),
        ),
      );
      for (const a of answers) counts.set(a.status, (counts.get(a.status) ?? 0) + 1);
    }
    return counts;
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-e2e-fleet-rotation-'));
    dataDir = join(work, 'data');
    fleetDir = join(work, 'fleet');
    daemon = await startKeyferryd(dataDir);
    const token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
    const env = { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg') };
    cli = (args) =>
      runBinAsync('keyferry', ['--server', daemon.listen.api, '-t', token, '-f', 'demo', ...args], { env });
    sim = (args) =>
      runBinAsync('sim', args, {
        env: {
          ...env,
          KEYFERRY_DATA_DIR: dataDir,
          KEYFERRY_SERVER: daemon.listen.api,
          KEYFERRY_FACTORY: 'demo',
          KEYFERRY_TOKEN: token,
        },
      });
    await setUpFactoryPki(cli, join(work, 'pki'));
    repoId = /^demo {2}(\S+)$/m.exec((await cli(['factories'])).stdout)?.[1] ?? '';
    expect(repoId).not.toBe('');
  });

  afterAll(async () => {
    await daemon?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('every device rotates into its other slot, connects with the new pair, the old one is refused', async () => {
    const made = await sim([
      'fleet',
      '--devices',
      String(FLEET_DEVICES),
      '--product',
      PRODUCT,
      '--dir',
      fleetDir,
      '--concurrency',
      '8',
    ]);
    expect(made.stderr).toBe('');
    expect(made.stdout).toMatch(
      new RegExp(`^Provisioned: ${FLEET_DEVICES} of ${FLEET_DEVICES} devices\\nFailed: 0\\n`),
    );

    // before: the first certificates live the object's 20 years; none is due within a year
    expect((await expiring('365d')).certificates).toHaveLength(0);
    const first = await expiring('21y');
    expect(first.certificates).toHaveLength(FLEET_DEVICES);
    expect(new Set(first.certificates.map((c) => c.group))).toEqual(new Set([GROUP]));

    // keep the pairs in use, to try them at the gateway once replaced
    const old = homes().map((home, i) => {
      const pair = sotaPair(join(home, 'sota'));
      const copy = { key: join(work, `old-${i}.key.pem`), cert: join(work, `old-${i}.pem`) };
      copyFileSync(pair.key, copy.key);
      copyFileSync(pair.cert, copy.cert);
      return copy;
    });
    expect(await gatewayStatuses(old)).toEqual(new Map([[200, FLEET_DEVICES]]));

    const marked = await cli(['el2g', 'devices', 'rotate', '--group', GROUP]);
    expect(marked.stderr).toBe('');
    expect(marked.status).toBe(0);
    const requested = await expiring('21y');
    expect(requested.certificates.filter((c) => c.rotationRequested)).toHaveLength(FLEET_DEVICES);

    const pass = await sim(['fleet', '--renew', '--dir', fleetDir, '--concurrency', '8']);
    expect(pass.stderr).toBe('');
    expect(pass.status).toBe(0);
    expect(pass.stdout).toMatch(
      new RegExp(`^Renewed: ${FLEET_DEVICES} of ${FLEET_DEVICES} devices\\nFailed: 0\\n`),
    );
    expect(pass.stdout).toMatch(new RegExp(`\\nRotated: ${FLEET_DEVICES}\\n$`));

    // every device connects with its new pair (the other slot); the superseded pairs are refused
    const now = homes().map((home) => sotaPair(join(home, 'sota')));
    for (const pair of now) expect(pair.key).toContain('SE_83010042');
    expect(await gatewayStatuses(now)).toEqual(new Map([[200, FLEET_DEVICES]]));
    expect(await gatewayStatuses(old)).toEqual(new Map([[403, FLEET_DEVICES]]));

    // certs expiring: the renewed certificates live the renewal validity (a year), unmarked
    const after = await expiring('366d');
    expect(after.certificates).toHaveLength(FLEET_DEVICES);
    expect(after.certificates.filter((c) => c.rotationRequested)).toHaveLength(0);
    const oldSerials = new Set(first.certificates.map((c) => c.serial));
    expect(after.certificates.filter((c) => oldSerials.has(c.serial))).toHaveLength(0);
    for (const c of after.certificates) {
      const days = (Date.parse(c.notAfter) - Date.now()) / DAY_MS;
      expect(days).toBeGreaterThan(360);
    }
    expect((await expiring('30d')).certificates).toHaveLength(0);

    // the flag is cleared: a second pass rotates nobody
    const again = await sim(['fleet', '--renew', '--dir', fleetDir, '--concurrency', '8']);
    expect(again.status).toBe(0);
    expect(again.stdout).toMatch(/\nRotated: 0\n$/);
  });
});

import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openDatabase } from '../../packages/server/src/storage/database.ts';
import { loadOrCreateVendorCa } from '../../packages/sim/src/se05x/vendor-ca.ts';
import { createDatabase, freePort } from '../support/postgres.ts';
import {
  BINS,
  type DaemonProcess,
  PROCESS_TEST_TIMEOUT_MS,
  READY_TIMEOUT_MS,
  runBinAsync,
  runCommand,
  startKeyferryd,
} from '../support/processes.ts';
import { completedDevices, provisioningCounts } from '../support/provisioning-checks.ts';

const PRODUCT = '935389312472';
/** Devices provisioned through HAProxy while one node is killed and restarted (about 45 s here). */
const FLEET_DEVICES = Number(process.env.KEYFERRY_NODES_TEST_DEVICES ?? 1_000);
const NODES = 3;
/** The fleet's own limit: it must finish, retries included, well inside the test's. */
const FLEET_TIMEOUT_MS = 480_000;
/** What HAProxy adds to the management API's answers, so the test knows it reached HAProxy. */
const VIA_HEADER = 'x-test-via';

interface Node {
  name: string;
  dataDir: string;
  configFile: string;
  ports: { api: number; deviceLink: number; gateway: number };
  daemon?: DaemonProcess;
}

/**
 * Three keyferryd processes on one PostgreSQL behind HAProxy (docs/deployment.md, "Several
 * nodes"): the same master key file, the same device-link service CA, each its own data dir.
 * One node is SIGKILLed mid-fleet and started again; the fleet must not notice beyond retries.
 */
describe('three keyferryd on one PostgreSQL behind HAProxy', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let work: string;
  let url: string;
  let haproxy: ChildProcess;
  let haproxyLog = '';
  const front = { api: 0, deviceLink: 0, gateway: 0 };
  const nodes: Node[] = [];

  const start = async (node: Node) => {
    node.daemon = await startKeyferryd(node.dataDir, {
      args: ['--config', node.configFile],
      env: {
        KEYFERRY_API_LISTEN: `127.0.0.1:${node.ports.api}`,
        KEYFERRY_DEVICE_LINK_LISTEN: `127.0.0.1:${node.ports.deviceLink}`,
        KEYFERRY_GATEWAY_LISTEN: `127.0.0.1:${node.ports.gateway}`,
      },
    });
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-nodes-'));
    url = await createDatabase(inject('postgresUrl'), `nodes_${process.pid}`);
    const masterKey = join(work, 'master.key');
    writeFileSync(masterKey, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
    const simData = join(work, 'sim-data');
    await loadOrCreateVendorCa(join(simData, 'sim'));
    for (let i = 1; i <= NODES; i++) {
      const dataDir = join(work, `node${i}`);
      mkdirSync(dataDir, { mode: 0o700 });
      const configFile = join(work, `node${i}.json`);
      writeFileSync(
        configFile,
        JSON.stringify({
          dataDir,
          storage: { kind: 'postgres', url, poolSize: 10 },
          keyCustody: { kind: 'soft', masterKeyFile: masterKey },
          demoFactory: { enabled: true },
          products: [
            { nc12: PRODUCT, name: 'SE050C2', trustAnchors: [join(simData, 'sim', 'vendor-ca.pem')] },
          ],
          log: { level: 'warn' },
        }),
        { mode: 0o600 }, // the database password is in it
      );
      const ports = { api: await freePort(), deviceLink: await freePort(), gateway: await freePort() };
      nodes.push({ name: `node${i}`, dataDir, configFile, ports });
    }
    // the first node makes the schema, the demo factory and the device-link service CA; the
    // others take the same CA so a device trusts whichever node HAProxy picks
    await start(nodes[0]!);
    for (const node of nodes.slice(1)) {
      for (const file of ['service-ca.pem', 'service-ca.key']) {
        copyFileSync(join(nodes[0]!.dataDir, file), join(node.dataDir, file));
      }
    }
    await Promise.all(nodes.slice(1).map(start));

    front.api = await freePort();
    front.deviceLink = await freePort();
    front.gateway = await freePort();
    const servers = (port: keyof Node['ports'], check: string) =>
      nodes.map((n) => `  server ${n.name} 127.0.0.1:${n.ports[port]} ${check}`).join('\n');
    const cfg = join(work, 'haproxy.cfg');
    writeFileSync(
      cfg,
      `global
  maxconn 4096
defaults
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch
  # a killed node refuses its check at once; a node slow on a busy machine is not taken for dead
  timeout check 2s
  default-server inter 300ms fall 1 rise 2
frontend api
  mode http
  bind 127.0.0.1:${front.api}
  http-response set-header ${VIA_HEADER} haproxy
  default_backend api
backend api
  mode http
  balance roundrobin
  option httpchk GET /readyz
${servers('api', 'check')}
frontend device-link
  mode tcp
  bind 127.0.0.1:${front.deviceLink}
  default_backend device-link
backend device-link
  mode tcp
  balance leastconn
${servers('deviceLink', 'check')}
frontend gateway
  mode tcp
  bind 127.0.0.1:${front.gateway}
  default_backend gateway
backend gateway
  mode tcp
  balance leastconn
${servers('gateway', 'check')}
`,
    );
    haproxy = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
    haproxy.stdout!.on('data', (d) => (haproxyLog += d));
    haproxy.stderr!.on('data', (d) => (haproxyLog += d));
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      // HAProxy's answer, not another process's that took the port while HAProxy could not
      const ok = await fetch(`http://127.0.0.1:${front.api}/readyz`).then(
        (r) => r.ok && r.headers.get(VIA_HEADER) === 'haproxy',
        () => false,
      );
      if (ok) break;
      if (haproxy.exitCode !== null || Date.now() > deadline)
        throw new Error(`HAProxy did not come up: ${haproxyLog}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  /** The operator's one-time setup, through HAProxy: the factory PKI and the gateway's objects. */
  async function setUpFactory(token: string): Promise<void> {
    const pki = join(work, 'pki');
    for (const step of [
      ['keys', 'ca', 'create', pki],
      ['el2g', 'config-device-gateway', '--pki-dir', pki],
    ]) {
      const res = await runBinAsync(
        'keyferry',
        ['--server', `http://127.0.0.1:${front.api}`, '-t', token, '-f', 'demo', ...step],
        { env: { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg') } },
      );
      // a failure here has been seen once (the CLI's connection to HAProxy closed without an
      // answer) and not reproduced: what HAProxy and the nodes said goes with it
      const context = () =>
        [
          step.join(' '),
          `HAProxy (${haproxy?.exitCode === null ? 'running' : `exited ${haproxy?.exitCode}`}): ${haproxyLog}`,
          ...nodes.map((n) => `${n.name}: ${n.daemon?.stderr() ?? '(not started)'}`),
        ].join('\n');
      expect(res.stderr, context()).toBe('');
      expect(res.status, context()).toBe(0);
    }
  }

  afterAll(async () => {
    haproxy?.kill('SIGTERM');
    await Promise.all(nodes.map((n) => n.daemon?.stop()));
    rmSync(work, { recursive: true, force: true });
  });

  it(`provisions ${FLEET_DEVICES} devices through HAProxy while a node is killed and restarted`, async () => {
    const started = Date.now();
    const token = readFileSync(join(nodes[0]!.dataDir, 'demo.token'), 'utf8').trim();
    await setUpFactory(token);
    const fleet = runCommand(
      process.execPath,
      [
        BINS.sim,
        'fleet',
        '--devices',
        String(FLEET_DEVICES),
        '--product',
        PRODUCT,
        '--server',
        `http://127.0.0.1:${front.api}`,
        '--factory',
        'demo',
        '--token',
        token,
        '--device-link',
        `127.0.0.1:${front.deviceLink}`,
        '--device-link-ca',
        join(nodes[0]!.dataDir, 'service-ca.pem'),
        '--dir',
        join(work, 'fleet'),
        '--json',
      ],
      { env: { ...process.env, KEYFERRY_DATA_DIR: join(work, 'sim-data') }, timeoutMs: FLEET_TIMEOUT_MS },
    );
    const database = await openDatabase({ kind: 'postgres', url, poolSize: 2 }, work);
    try {
      const db = database.db;
      const completed = () => completedDevices(db);
      // kill a node once the fleet is under way, so it dies with requests in flight
      const victim = nodes[1]!;
      let fleetDone = false;
      void fleet.finally(() => (fleetDone = true));
      while (!fleetDone && (await completed()) < Math.ceil(FLEET_DEVICES / 5)) {
        await new Promise((r) => setTimeout(r, 100));
      }
      if (fleetDone) throw new Error(`the fleet ended before the kill: ${JSON.stringify(await fleet)}`);
      victim.daemon!.child.kill('SIGKILL');
      await victim.daemon!.stop();
      await new Promise((r) => setTimeout(r, 1_000));
      await start(victim);

      const run = await fleet;
      expect(run.stderr).toBe('');
      const summary = JSON.parse(run.stdout);
      expect(summary).toMatchObject({ devices: FLEET_DEVICES, provisioned: FLEET_DEVICES, failed: 0 });
      expect(run.status).toBe(0);

      const counts = await provisioningCounts(db);
      expect(counts).toMatchObject({
        devices: FLEET_DEVICES,
        completed: FLEET_DEVICES,
        duplicateLiveCerts: 0,
        auditGaps: 0,
      });
      expect(counts.certificates).toBeGreaterThanOrEqual(FLEET_DEVICES);
      console.log(`${FLEET_DEVICES} devices through HAProxy in ${(Date.now() - started) / 1000} s`);
    } finally {
      await database.close();
    }
  });
});

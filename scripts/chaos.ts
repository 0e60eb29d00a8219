import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REGISTER_CRASH_POINTS as CRASH_POINTS } from '../packages/agent/src/register/crash-point.ts';
import { openDatabase } from '../packages/server/src/storage/database.ts';
import { ManagementApi } from '../packages/sim/src/fleet/management-api.ts';
import { setupDeviceGateway } from '../test/support/device-link.ts';
import { createDatabase, freePort, type PostgresCluster, startPostgres } from '../test/support/postgres.ts';
import { BINS, type DaemonProcess, runCommand, startKeyferryd } from '../test/support/processes.ts';
import { completedDevices, custodyDigest, provisioningCounts } from '../test/support/provisioning-checks.ts';
import { buildAll } from './build.ts';

const USAGE = `Usage: npm run chaos -- [--storage sqlite|postgres] --devices N --kills K [--seed S] [--concurrency C] [--keep] [--no-build]

SIGKILLs a fresh keyferryd K times at random points while N simulated devices provision
(keyferry-sim fleet, which runs the agent's auto-register for each), starts it again each
time and lets the devices retry. ${CRASH_POINTS.length} of the N devices run the keyferry-agent program
instead, killed once at each of its crash points (${CRASH_POINTS.join(', ')}) and run
again. Then it checks: every device PROVISIONING_COMPLETED, no object with two live
certificates, every issued certificate in the audit log, the custody keys (CA keys) unchanged
and still signing (the agent devices enroll after the last kill).

  --storage sqlite|postgres  database (default sqlite); postgres starts its own PostgreSQL 15
                             cluster (/usr/lib/postgresql/15/bin, or KEYFERRY_PG_BIN)
  --devices N                devices, ${CRASH_POINTS.length + 1} to 100000
  --kills K                  keyferryd SIGKILLs, 0 to 100
  --seed S                   seed of the kill points, 0 to 4294967295 (default: random, printed)
  --concurrency C            the fleet's auto-register runs in flight (default 16)
  --keep                     keep the scratch directory (data dir, logs) instead of removing it
  --no-build                 do not build the programs first (npm run build has, as in the tests)

Prints RESULT kills=… devices=… completed=… duplicate_live_certs=… audit_gaps=… agent_kills=…
agent_converged=… ca_keys_intact=yes|no; exits 1 when any check fails, 2 on bad options.
`;

function fail(message: string): never {
  process.stderr.write(`ERROR: ${message}\n(npm run chaos -- --help shows the options)\n`);
  process.exit(2);
}

function integer(value: string | undefined, name: string, min: number, max: number): number {
  if (value === undefined) fail(`${name} is required`);
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || n < min || n > max)
    fail(`${name} ${value} is not a whole number from ${min} to ${max}`);
  return n;
}

let parsed: ReturnType<typeof parse>;
function parse() {
  return parseArgs({
    options: {
      storage: { type: 'string', default: 'sqlite' },
      devices: { type: 'string' },
      kills: { type: 'string' },
      seed: { type: 'string' },
      concurrency: { type: 'string', default: '16' },
      keep: { type: 'boolean', default: false },
      'no-build': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
}
try {
  parsed = parse();
} catch (error) {
  fail((error as Error).message);
}
if (parsed.values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const storageKind = parsed.values.storage;
if (storageKind !== 'sqlite' && storageKind !== 'postgres') {
  fail(`--storage ${storageKind} is neither sqlite nor postgres`);
}
const DEVICES = integer(parsed.values.devices, '--devices', CRASH_POINTS.length + 1, 100_000);
const KILLS = integer(parsed.values.kills, '--kills', 0, 100);
const SEED =
  parsed.values.seed === undefined
    ? Math.floor(Math.random() * 2 ** 32)
    : integer(parsed.values.seed, '--seed', 0, 2 ** 32 - 1);
const CONCURRENCY = integer(parsed.values.concurrency, '--concurrency', 1, 1000);
const PRODUCT = '935389312472';
const FLEET_DEVICES = DEVICES - CRASH_POINTS.length;

/** mulberry32: the same seed gives the same kill points. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}
const rand = random(SEED);
const say = (line: string) => process.stderr.write(`chaos: ${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const work = mkdtempSync(join(tmpdir(), 'keyferry-chaos-'));
const dataDir = join(work, 'data');
let postgres: PostgresCluster | undefined;
let daemon: DaemonProcess | undefined;
let exitCode = 1;
try {
  say(`storage ${storageKind}, ${DEVICES} devices, ${KILLS} kills, seed ${SEED}, in ${work}`);
  // the programs run from their build: never a stale one (the test suite has built them)
  if (!parsed.values['no-build']) await buildAll();
  const storageEnv: NodeJS.ProcessEnv = {};
  let storage: Parameters<typeof openDatabase>[0] = { kind: 'sqlite' };
  if (storageKind === 'postgres') {
    postgres = await startPostgres();
    const url = await createDatabase(postgres.url, 'keyferry_chaos');
    storageEnv.KEYFERRY_STORAGE_URL = url;
    storage = { kind: 'postgres', url, poolSize: 2 };
  }
  // fixed ports: a restarted keyferryd must answer where the devices already connect
  const ports = { api: await freePort(), deviceLink: await freePort(), gateway: await freePort() };
  const start = async () =>
    startKeyferryd(dataDir, {
      env: {
        ...storageEnv,
        KEYFERRY_API_LISTEN: `127.0.0.1:${ports.api}`,
        KEYFERRY_DEVICE_LINK_LISTEN: `127.0.0.1:${ports.deviceLink}`,
        KEYFERRY_GATEWAY_LISTEN: `127.0.0.1:${ports.gateway}`,
      },
    });
  daemon = await start();
  const server = `http://127.0.0.1:${ports.api}`;
  const deviceLink = `127.0.0.1:${ports.deviceLink}`;
  const token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
  const { rootPem } = await setupDeviceGateway(server, token);
  const database = await openDatabase(storage, dataDir);
  const db = database.db;
  try {
    const custodyBefore = await custodyDigest(db);

    // the fleet runs in its own process, as an operator would run it
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
        server,
        '--factory',
        'demo',
        '--token',
        token,
        '--device-link',
        deviceLink,
        '--device-link-ca',
        join(dataDir, 'service-ca.pem'),
        '--dir',
        join(work, 'fleet'),
        '--json',
        '--concurrency',
        String(CONCURRENCY),
      ],
      { env: { ...process.env, KEYFERRY_DATA_DIR: dataDir }, timeoutMs: 6 * 3_600_000 },
    );
    let fleetDone = false;
    void fleet.finally(() => (fleetDone = true));

    // kill k lands once the completed count passes a random point of the k-th K-th of the
    // first 80 % of the run (the first may land while the allow-list is being added): keyferryd
    // is frozen there (SIGSTOP), so the requests it is serving stay in flight and the fleet
    // cannot finish meanwhile (a quiet machine's fleet did, during the wait), and killed a
    // random 0–100 ms later
    let kills = 0;
    for (let k = 0; k < KILLS; k++) {
      const at = Math.floor((0.8 * FLEET_DEVICES * (k + rand())) / KILLS);
      const delay = Math.floor(rand() * 100);
      while (!fleetDone && (await completedDevices(db)) < at) await sleep(5);
      if (!fleetDone) daemon.child.kill('SIGSTOP');
      await sleep(delay);
      if (fleetDone) {
        daemon.child.kill('SIGCONT');
        say(`the fleet ended before kill ${k + 1}`);
        break;
      }
      const completed = await completedDevices(db);
      daemon.child.kill('SIGKILL');
      await daemon.stop();
      kills++;
      say(
        `kill ${kills} of ${KILLS} (SIGKILL) at ${completed} of ${FLEET_DEVICES} completed; starting again`,
      );
      daemon = await start();
    }

    const run = await fleet;
    const summary = (() => {
      try {
        return JSON.parse(run.stdout) as { provisioned: number; failed: number; failures: unknown[] };
      } catch {
        return undefined;
      }
    })();
    if (run.status !== 0 || summary === undefined) {
      say(`keyferry-sim fleet exited ${run.status ?? run.signal}: ${run.stderr.trim()}`);
      if (summary) say(`failures: ${JSON.stringify(summary.failures.slice(0, 5))}`);
    }

    // the agent program, killed at each of its crash points, then run again
    const api = new ManagementApi({ server, factory: 'demo', token });
    const [repoId, subdomain] = await Promise.all([api.repoId(), api.subdomain()]);
    const rootCrt = join(work, 'root.crt');
    writeFileSync(rootCrt, rootPem);
    let agentKills = 0;
    let agentConverged = 0;
    for (const point of CRASH_POINTS) {
      const home = join(work, `agent-${point}`);
      const seDir = join(home, 'se');
      const created = await runCommand(
        process.execPath,
        [BINS.sim, 'se05x', 'create', '--product', PRODUCT, '--dir', seDir],
        { env: { ...process.env, KEYFERRY_DATA_DIR: dataDir } },
      );
      const uid = created.stdout.trim();
      const added = await api.allowList(PRODUCT, [uid]);
      if (created.status !== 0 || added[0]?.status !== 'added') {
        say(`agent device for ${point}: ${created.stderr.trim()} ${JSON.stringify(added)}`);
        continue;
      }
      mkdirSync(join(home, 'sota'), { recursive: true });
      const envFile = join(home, 'lmp-el2go-auto-register');
      writeFileSync(
        envFile,
        [
          `REPOID=${repoId}`,
          `EL2GO_HOSTNAME=${subdomain}`,
          `EL2GO_CONNECT_ADDR=${deviceLink}`,
          `DEVICE_LINK_CA=${join(dataDir, 'service-ca.pem')}`,
          'SE_BACKEND=soft',
          `SE_DIR=${seDir}`,
          `SOTA_DIR=${join(home, 'sota')}`,
          `ROOT_CRT=${rootCrt}`,
          'DAEMON_INTERVAL=1',
          'AKLITE_START_CMD=true',
          '',
        ].join('\n'),
      );
      const agent = (env: NodeJS.ProcessEnv) =>
        runCommand(process.execPath, [BINS.agent, 'auto-register', '--env-file', envFile], {
          env: { ...process.env, KEYFERRY_DEBUG: '', ...env },
        });
      const crashed = await agent({ KEYFERRY_AGENT_CRASH_AT: point });
      if (crashed.signal === 'SIGKILL') agentKills++;
      else say(`the agent did not die at ${point}: exit ${crashed.status} ${crashed.stderr.trim()}`);
      const rerun = await agent({});
      if (rerun.status === 0) agentConverged++;
      else say(`the agent run after ${point} exited ${rerun.status}: ${rerun.stderr.trim()}`);
    }

    const counts = await provisioningCounts(db);
    const caKeysIntact =
      (await custodyDigest(db)) === custodyBefore && agentConverged === CRASH_POINTS.length;
    process.stdout.write(
      `RESULT kills=${kills} devices=${counts.devices} completed=${counts.completed} ` +
        `duplicate_live_certs=${counts.duplicateLiveCerts} audit_gaps=${counts.auditGaps} ` +
        `agent_kills=${agentKills} agent_converged=${agentConverged} ca_keys_intact=${caKeysIntact ? 'yes' : 'no'} ` +
        `storage=${storageKind} seed=${SEED}\n`,
    );
    const ok =
      kills === KILLS &&
      run.status === 0 &&
      counts.devices === DEVICES &&
      counts.completed === DEVICES &&
      counts.duplicateLiveCerts === 0 &&
      counts.auditGaps === 0 &&
      agentKills === CRASH_POINTS.length &&
      caKeysIntact;
    exitCode = ok ? 0 : 1;
    if (!ok) say(`FAILED (seed ${SEED}; rerun with --seed ${SEED} --keep to look at ${work})`);
  } finally {
    await database.close();
  }
} catch (error) {
  say(`FAILED: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  if (daemon) say(`keyferryd stderr: ${daemon.stderr().slice(-2000)}`);
} finally {
  await daemon?.stop();
  postgres?.stop();
  if (parsed.values.keep) say(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
}
process.exit(exitCode);

/**
 * `npm run bench`: provisioning through the real device-link (docs/performance.md). In one run:
 * a keyferryd process pinned to one core, devices provisioned with bounded concurrency by a
 * load generator pinned to the other, CPU milliseconds per provisioned device of both (from
 * /proc and process.cpuUsage, robust to other work on the machine), latency split into
 * service time (one device at a time) and queueing, and the floor: a minimal Node HTTPS
 * server with the same TLS options, one mutual-TLS handshake per connection, and the device
 * floor: the same with a device's three requests on each connection. With
 * `--storage postgres` the run measures SQLite first and then PostgreSQL (`--nodes` keyferryd
 * on one throwaway cluster, the devices alternating between them), one RESULT line each.
 * Progress goes to stderr; the figures and the closing RESULT line to stdout.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildAll } from '../scripts/build.ts';
import {
  type BenchDatabase,
  benchPostgres,
  checkPostgresUrl,
  postgresUrlOption,
  storageOption,
} from './lib/bench-postgres.ts';
import { hrtimeMicros, profileLines, profilesOf } from './lib/cpu-profile.ts';
import {
  type Fleet,
  makeDevices,
  provision,
  REPORT,
  type SimDevice,
  startFleet,
  statementsSent,
} from './lib/device-link-load.ts';
import { measureFloor } from './lib/floor.ts';
import { percentiles } from './lib/keep-alive-client.ts';
import { benchOptions, positiveInteger } from './lib/options.ts';
import { choosePinning, describePinning, peakRssMb, pin } from './lib/process-stats.ts';

const options = benchOptions(
  'Usage: npm run bench [-- options]\n\nProvisions simulated SE05x devices through a real keyferryd and prints CPU ms per device,\ndevices/s, latency and the TLS floor, ending with a RESULT line (docs/performance.md).',
  {
    devices: { value: 'N', default: '1000', help: 'devices provisioned under load', check: positiveInteger },
    concurrency: { value: 'N', default: '16', help: 'devices in flight under load', check: positiveInteger },
    'service-devices': {
      value: 'N',
      default: '50',
      help: 'devices provisioned one at a time (service time)',
      check: positiveInteger,
    },
    warmup: {
      value: 'N',
      default: '500',
      help: 'devices per keyferryd process provisioned before any clock (V8 optimises its hot path meanwhile)',
      check: positiveInteger,
    },
    handshakes: {
      value: 'N',
      default: '1000',
      help: 'mTLS handshakes for the floor, and as many again for the device floor',
      check: positiveInteger,
    },
    workers: {
      value: 'N',
      default: '1',
      help: 'keyferryd worker processes (workers: N); above 1 nothing is pinned',
      check: positiveInteger,
    },
    storage: storageOption('keyferryd storage; postgres measures SQLite first, then PostgreSQL'),
    nodes: {
      value: 'N',
      default: '1',
      help: 'with --storage postgres: keyferryd nodes on the one database',
      check: positiveInteger,
    },
    'cpu-prof': {
      value: 'DIR',
      help: 'write a CPU profile of every keyferryd process into DIR (node --cpu-prof) and print where its CPU went under the load',
      check: (t) => (t.length > 0 ? undefined : 'takes a directory'),
    },
    'no-build': { value: '', help: 'run the programs as built (the test suite builds them first)' },
    'postgres-url': postgresUrlOption,
  },
);
const n = (name: keyof typeof options) => Number(options[name]);
checkPostgresUrl(options);
if (n('nodes') > 1 && options.storage !== 'postgres') {
  console.error(
    `--nodes ${n('nodes')} needs --storage postgres: several keyferryd share a PostgreSQL database, not a SQLite file\nRun with --help for the options.`,
  );
  process.exit(2);
}

const say = (line: string) => console.error(`[bench] ${line}`);
const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => x.toFixed(2);
const processes = n('workers') * n('nodes');
const pinning =
  processes > 1
    ? { none: `${n('nodes')} node(s) × ${n('workers')} worker(s) share the cores` }
    : choosePinning();
const serverCore = 'none' in pinning ? undefined : pinning.server;
pin(process.pid, 'none' in pinning ? undefined : pinning.client);

const work = mkdtempSync(join(tmpdir(), 'keyferry-bench-'));
let cluster: BenchDatabase | undefined;
let fleet: Fleet | undefined;
let failed = 0;

/** One storage's measurement: a fleet, its devices, the load, the floor; prints its RESULT line. */
async function measure(storage: 'sqlite' | 'postgres', nodes: number): Promise<void> {
  if (storage === 'postgres') cluster = await benchPostgres(options['postgres-url'], say);
  const storageUrl = cluster?.url;
  const dataDir = join(work, `data-${storage}`);
  fleet = await startFleet(dataDir, {
    ...(storageUrl ? { storageUrl } : {}),
    ...(serverCore === undefined ? {} : { core: serverCore }),
    workers: n('workers'),
    nodes,
    ...(options['cpu-prof'] ? { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${options['cpu-prof']}`] } : {}),
  });
  // V8 optimises each process on its own, and the processes share the devices: the warm-up is per process
  const warmup = n('warmup') * n('workers') * nodes;
  const total = warmup + n('service-devices') + n('devices');
  say(
    `${storage}: keyferryd pid ${fleet.nodes.map((node) => node.pid).join(', ')}; making and allow-listing ${total} devices`,
  );
  const all = await makeDevices(fleet, total);
  const warm = all.slice(0, warmup);
  const service = all.slice(warm.length, warm.length + n('service-devices'));
  const load = all.slice(warm.length + service.length);
  const check = (what: string, run: { failures: { count: number; lines(): string[] } }) => {
    failed += run.failures.count;
    if (run.failures.count > 0)
      say(`${what}: ${run.failures.count} failed\n${run.failures.lines().join('\n')}`);
  };

  say(`warm-up: ${warm.length} devices (${n('warmup')} per keyferryd process)`);
  check('warm-up', await provision(fleet, warm, n('concurrency')));
  say(`service time: ${service.length} devices one at a time`);
  const alone = await provision(fleet, service, 1);
  check('service time', alone);
  const concurrency = Math.min(n('concurrency'), load.length);
  say(`load: ${load.length} devices, ${concurrency} in flight`);
  const statements0 = await statementsSent(fleet);
  const loadWindow = { startUs: hrtimeMicros(), endUs: 0 };
  const run = await provision(
    fleet,
    load,
    concurrency,
    (done) => say(`  load: ${done}/${load.length} devices`),
    cluster?.pid,
  );
  loadWindow.endUs = hrtimeMicros();
  check('load', run);
  const statements = (await statementsSent(fleet)) - statements0;
  const rssEach = fleet.pids.map(peakRssMb);
  const rss = rssEach.reduce((a, b) => a + b, 0);
  say(
    `floor: ${n('handshakes')} mTLS handshakes against a minimal Node HTTPS server, interleaved with as many making a device's three requests`,
  );
  const floor = await measureFloor({
    dataDir,
    host: fleet.host,
    devices: load as SimDevice[],
    handshakes: n('handshakes'),
    concurrency,
    core: serverCore,
    deviceRequests: (d) => [
      { method: 'GET' },
      { method: 'POST', body: Buffer.from(d.csrDer).toString('base64') },
      { method: 'POST', body: REPORT },
    ],
  });
  check('floor', floor);
  const pids = fleet.pids;
  await fleet.stop(); // a process writes its CPU profile as it exits
  fleet = undefined;
  cluster?.stop();
  cluster = undefined;

  const lat = percentiles(run.deviceMs);
  const svc = percentiles(alone.deviceMs);
  const perDevice = run.serverCpuMs / run.provisioned;
  const clientPerDevice = run.clientCpuMs / run.provisioned;
  const statementsPerDevice = statements / run.provisioned;
  const rate = run.provisioned / run.seconds;
  // /proc counts CPU in 10 ms ticks: a few handshakes can read as none, and there is no ratio then
  const ratio = floor.serverMsPerHandshake > 0 ? f2(perDevice / floor.serverMsPerHandshake) : 'n/a';
  // as for the floor: none read (below a tick) gives no figure
  const deviceFloorMs = floor.deviceMsPerConnection || undefined;
  const deviceRatio = deviceFloorMs === undefined ? 'n/a' : f2(perDevice / deviceFloorMs);
  const deviceFloorTimes =
    deviceFloorMs === undefined || floor.serverMsPerHandshake === 0
      ? 'n/a'
      : f2(deviceFloorMs / floor.serverMsPerHandshake);
  const where = nodes > 1 ? `${storage}, ${nodes} keyferryd nodes` : storage;
  console.log(`keyferry device-link bench — node ${process.version}, ${where}, ${describePinning(pinning)}`);
  console.log(
    `load:     ${run.provisioned} devices provisioned (${run.failures.count} failed) in ${f1(run.seconds)} s, ${concurrency} in flight: ${f1(rate)} devices/s`,
  );
  console.log(
    `server:   ${f2(perDevice)} ms CPU per device (keyferryd, /proc/<pid>/stat of ${rssEach.length} process${rssEach.length === 1 ? '' : 'es'}; PostgreSQL's own not counted), peak RSS ${f1(rss)} MB in all, ${f1(Math.max(...rssEach))} MB the largest process`,
  );
  console.log(
    `          ${f1(statementsPerDevice)} statements per device sent to the database (BEGIN and COMMIT included; /metrics)`,
  );
  const dbPerDevice = run.databaseCpuMs === undefined ? undefined : run.databaseCpuMs / run.provisioned;
  if (dbPerDevice !== undefined) {
    console.log(
      `database: ${f2(dbPerDevice)} ms CPU per device (the PostgreSQL server's processes, /proc; the bench's throwaway cluster runs with fsync off)`,
    );
  }
  console.log(
    `client:   ${f2(clientPerDevice)} ms CPU per device (load generator), ${((run.clientCpuMs / (run.seconds * 1000)) * 100).toFixed(0)}% of its core`,
  );
  console.log(
    `latency:  per device (handshake + manifest + enroll + report) p50/p90/p99 ${f1(lat.p50)} / ${f1(lat.p90)} / ${f1(lat.p99)} ms`,
  );
  console.log(
    `service:  one device at a time p50/p90/p99 ${f1(svc.p50)} / ${f1(svc.p90)} / ${f1(svc.p99)} ms; queueing at ${concurrency} in flight ≈ ${f1(Math.max(0, lat.p50 - svc.p50))} ms (p50)`,
  );
  console.log(
    `floor:    ${floor.handshakes} mTLS handshakes, ${f1(floor.perSecond)}/s, ${f2(floor.serverMsPerHandshake)} ms server CPU each; keyferry per device / floor = ${ratio}${ratio === 'n/a' ? " (the floor's CPU was below /proc's 10 ms tick; raise --handshakes)" : ''}`,
  );
  console.log(
    `          the same with a device's three requests (manifest, CSR and report bodies; nothing done with them): ${deviceFloorMs === undefined ? 'n/a' : f2(deviceFloorMs)} ms server CPU each = ${deviceFloorTimes} × the floor; keyferry per device / that = ${deviceRatio}`,
  );
  if (options['cpu-prof']) {
    const profiles = profilesOf(options['cpu-prof'], pids);
    for (const line of profileLines(profiles, [loadWindow], run.provisioned, perDevice, 'device'))
      console.log(line);
  }
  console.log(
    `RESULT devices=${run.provisioned} devices_per_s=${f1(rate)} server_ms_per_device=${f2(perDevice)} client_ms_per_device=${f2(clientPerDevice)} floor_ms_per_handshake=${f2(floor.serverMsPerHandshake)} floor_ratio=${ratio} p50_ms=${f1(lat.p50)} p99_ms=${f1(lat.p99)} service_p99_ms=${f1(svc.p99)} rss_mb=${f1(rss)} workers=${n('workers')} storage=${storage} nodes=${nodes} db_ms_per_device=${dbPerDevice === undefined ? 'n/a' : f2(dbPerDevice)} device_floor_ms=${deviceFloorMs === undefined ? 'n/a' : f2(deviceFloorMs)} statements_per_device=${f1(statementsPerDevice)}`,
  );
}

try {
  say(`node ${process.version}; ${describePinning(pinning)}`);
  // the programs as the working tree has them, not a dist/ left from an older build
  if (options['no-build'] !== 'true') await buildAll();
  if (options.storage === 'postgres') {
    say('SQLite first, then PostgreSQL, in this run');
    await measure('sqlite', 1);
    await measure('postgres', n('nodes'));
  } else await measure('sqlite', 1);
  if (failed > 0) console.log(`failed:   ${failed} (see stderr)`);
} finally {
  await fleet?.stop();
  cluster?.stop();
  rmSync(work, { recursive: true, force: true });
}
if (failed > 0) process.exitCode = 1;

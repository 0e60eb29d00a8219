/**
 * `npm run bench:issue`: certificate issuance alone, keyferry against cfssl over the wire
 * (docs/performance.md). Both servers in turn on the same pinned core, the same CSRs, the same
 * keep-alive node:http(s) client and concurrency: keyferry's EST simpleenroll on device
 * connections opened (TLS handshake and manifest) before the clock, cfssl's /api/v1/cfssl/sign
 * on plain HTTP, then again with mutual TLS and its certdb (cfssl-peer.ts, `stored`). keyferry's
 * in-process issuance (no network, TLS or storage) is printed separately. Ends with
 * `RESULT keyferry_certs_per_s=… cfssl_certs_per_s=… ratio=… cfssl_stored_certs_per_s=… ratio_stored=…
 * inprocess_ms_per_cert=… request_floor_ms=… ratio_ceiling=…`: the last three say how far a Node
 * server can get at all (docs/performance.md).
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deviceCertificate, parseAndVerifyCsr, toPem } from '@keyferry/core';
import { buildAll } from '../scripts/build.ts';
import { cfsslIssue, cfsslVersion, findCfssl, type IssueRun } from './lib/cfssl-peer.ts';
import { hrtimeMicros, profileLines, profilesOf, type Window } from './lib/cpu-profile.ts';
import {
  deviceAgent,
  type Fleet,
  makeDevices,
  manifest,
  type SimDevice,
  simpleenroll,
  startFleet,
} from './lib/device-link-load.ts';
import { measureRequestFloor } from './lib/floor.ts';
import { issuanceSetup, measure } from './lib/issuance-setup.ts';
import { Failures, runPool } from './lib/keep-alive-client.ts';
import { benchOptions, positiveInteger } from './lib/options.ts';
import { choosePinning, describePinning, pin, processCpuMs } from './lib/process-stats.ts';

const options = benchOptions(
  'Usage: npm run bench:issue [-- options]\n\nIssues certificates for the same CSRs with keyferry (EST simpleenroll) and cfssl (serve), each\nserver pinned to one core, through the same keep-alive client; ends with a RESULT line.',
  {
    csrs: { value: 'N', default: '2000', help: 'CSRs (devices) issued by each CA', check: positiveInteger },
    concurrency: { value: 'N', default: '16', help: 'requests in flight', check: positiveInteger },
    connections: {
      value: 'N',
      default: '64',
      help: 'device connections opened before each timed batch',
      check: positiveInteger,
    },
    seconds: {
      value: 'S',
      default: '2',
      help: 'seconds of in-process issuance',
      check: (t) => (/^[0-9]+(\.[0-9]+)?$/.test(t) && Number(t) > 0 ? undefined : 'takes a positive number'),
    },
    'no-cfssl': { value: '', help: 'skip cfssl' },
    'cpu-prof': {
      value: 'DIR',
      help: 'write a CPU profile of keyferryd into DIR (node --cpu-prof) and print where its CPU went in the timed enrollments',
      check: (t) => (t.length > 0 ? undefined : 'takes a directory'),
    },
    'no-build': { value: '', help: 'run the programs as built (the test suite builds them first)' },
  },
);
const WARM_UP = 100;
const csrCount = Number(options.csrs);
const concurrency = Number(options.concurrency);
const say = (line: string) => console.error(`[bench:issue] ${line}`);
const pinning = choosePinning();
const serverCore = 'none' in pinning ? undefined : pinning.server;
pin(process.pid, 'none' in pinning ? undefined : pinning.client);

/**
 * keyferry's simpleenroll, one device (key, CSR) each: in batches, each batch's connections
 * opened unclocked (handshake + manifest), then only the enrollments timed, since an idle
 * device connection is closed after 5 s.
 */
async function keyferryIssue(
  fleet: Fleet,
  devices: readonly SimDevice[],
): Promise<IssueRun & { windows: Window[] }> {
  const failures = new Failures();
  const windows: Window[] = [];
  let seconds = 0;
  let cpu = 0;
  const batch = Number(options.connections);
  for (let from = 0; from < devices.length; from += batch) {
    const part = devices.slice(from, from + batch);
    const agents = part.map((d) => deviceAgent(fleet, d));
    const open = new Set<number>();
    await runPool(
      part.length,
      concurrency,
      (i) => manifest(fleet, agents[i]!).then(() => void open.add(i)),
      failures,
    );
    const cpu0 = processCpuMs(fleet.pid);
    const start = performance.now();
    const window = { startUs: hrtimeMicros(), endUs: 0 };
    await runPool(
      part.length,
      concurrency,
      async (i) => {
        if (open.has(i)) await simpleenroll(fleet, agents[i]!, part[i]!);
      },
      failures,
    );
    seconds += (performance.now() - start) / 1000;
    cpu += processCpuMs(fleet.pid) - cpu0;
    window.endUs = hrtimeMicros();
    windows.push(window);
    for (const agent of agents) agent.destroy();
    if (devices.length > batch)
      say(`  keyferry: ${Math.min(from + batch, devices.length)}/${devices.length}`);
  }
  const issued = devices.length - failures.count;
  return { issued, failures, perSecond: issued / seconds, serverMsPerCert: cpu / issued, windows };
}

const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => x.toFixed(2);
const work = mkdtempSync(join(tmpdir(), 'keyferry-bench-issue-'));
let fleet: Fleet | undefined;
let failed = 0;
const report = (what: string, run: { failures: Failures }) => {
  failed += run.failures.count;
  if (run.failures.count > 0)
    say(`${what}: ${run.failures.count} failed\n${run.failures.lines().join('\n')}`);
};
try {
  say(`node ${process.version}; ${describePinning(pinning)}`);
  // the programs as the working tree has them, not a dist/ left from an older build
  if (options['no-build'] !== 'true') await buildAll();
  fleet = await startFleet(join(work, 'data'), {
    ...(serverCore === undefined ? {} : { core: serverCore }),
    ...(options['cpu-prof'] ? { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${options['cpu-prof']}`] } : {}),
  });
  const warmCount = Math.min(WARM_UP, csrCount);
  say(`keyferryd pid ${fleet.pid}; making and allow-listing ${warmCount + csrCount} devices`);
  const all = await makeDevices(fleet, warmCount + csrCount);
  const timed = all.slice(warmCount);
  report('keyferry warm-up', await keyferryIssue(fleet, all.slice(0, warmCount)));
  say(`keyferry: ${csrCount} simpleenroll, ${concurrency} in flight`);
  const kf = await keyferryIssue(fleet, timed);
  report('keyferry', kf);
  const host = fleet.host;
  const pids = fleet.pids;
  await fleet.daemon.stop(); // keyferryd writes its CPU profile as it exits
  fleet = undefined;
  say(`request floor: the same ${csrCount} bodies to a minimal Node HTTPS server, on open connections`);
  const floor = await measureRequestFloor({
    dataDir: join(work, 'data'),
    host,
    devices: timed,
    bodies: timed.map((d) => Buffer.from(d.csrDer).toString('base64')),
    connections: Number(options.connections),
    concurrency,
    core: serverCore,
  });
  report('request floor', floor);

  let peer: IssueRun | undefined;
  let stored: IssueRun | undefined;
  let peerNote = 'skipped (--no-cfssl)';
  let storedNote = peerNote;
  if (options['no-cfssl'] !== 'true') {
    const found = findCfssl();
    if ('skipped' in found) {
      peerNote = `skipped: ${found.skipped}`;
      storedNote = peerNote;
    } else {
      peerNote = `cfssl ${cfsslVersion(found.bin)} serve, GOMAXPROCS=1, plain HTTP`;
      say(`${peerNote}: the same ${csrCount} CSRs, ${concurrency} in flight`);
      const pems = timed.map((d) => toPem(d.csrDer, 'CERTIFICATE REQUEST'));
      peer = await cfsslIssue({ bin: found.bin, dir: work, csrPems: pems, concurrency, core: serverCore });
      report('cfssl', peer);
      storedNote = `cfssl ${cfsslVersion(found.bin)} serve, GOMAXPROCS=1, mutual TLS, every certificate in its SQLite certdb`;
      say(`${storedNote}: the same CSRs`);
      const dir = join(work, 'cfssl-stored');
      mkdirSync(dir);
      stored = await cfsslIssue({
        bin: found.bin,
        dir,
        csrPems: pems,
        concurrency,
        core: serverCore,
        stored: true,
      });
      report('cfssl+db', stored);
    }
  }

  say(`in process: ${options.seconds} s of CSR verify + certificate`);
  const setup = await issuanceSetup('demo', 1);
  const inProcess = await measure(Number(options.seconds), (i) => {
    const device = timed[i % timed.length]!;
    const csr = parseAndVerifyCsr(device.csrDer);
    return deviceCertificate({
      template: setup.template,
      signer: setup.caSigner,
      deviceId: setup.devices[0]!.deviceId,
      publicKeySpki: csr.publicKeySpki,
    });
  });

  const line = (name: string, run: IssueRun | undefined, note: string) =>
    console.log(
      run === undefined
        ? `${name.padEnd(10)} n/a (${note})`
        : `${name.padEnd(10)} ${f1(run.perSecond)} certificates/s, ${f2(run.serverMsPerCert)} ms server CPU each, ${run.issued} issued, ${run.failures.count} failed (${note})`,
    );
  console.log(`keyferry issuance bench — node ${process.version}, ${describePinning(pinning)}`);
  line('keyferry', kf, `EST simpleenroll over mutual TLS on open keep-alive connections, SQLite`);
  if (options['cpu-prof']) {
    const profiles = profilesOf(options['cpu-prof'], pids);
    for (const l of profileLines(profiles, kf.windows, kf.issued, kf.serverMsPerCert, 'certificate'))
      console.log(l);
  }
  line('cfssl', peer, peerNote);
  line('cfssl+db', stored, storedNote);
  const ratio = peer === undefined ? undefined : kf.perSecond / peer.perSecond;
  const ratioStored = stored === undefined ? undefined : kf.perSecond / stored.perSecond;
  if (ratio !== undefined)
    console.log(`ratio      keyferry / cfssl = ${f2(ratio)} (over the wire, one core each)`);
  if (ratioStored !== undefined)
    console.log(`ratio      keyferry / cfssl+db = ${f2(ratioStored)} (both over mutual TLS, both storing)`);
  console.log(
    `in-process keyferry alone (no network, no TLS, no storage; not comparable to the lines above): ${inProcess.perSecond.toFixed(0)} certificates/s, ${f2(inProcess.cpuMsEach)} ms CPU each`,
  );
  console.log(
    `floor      ${f2(floor.serverMsPerRequest)} ms server CPU per request: a minimal Node HTTPS server reading the same bodies on open keep-alive mutual-TLS connections`,
  );
  // CSR verify, signing and one HTTPS request are what keyferry cannot skip: with storage and
  // all else free, its rate on one core is at most 1 / their CPU — the ratio's ceiling here
  const least = inProcess.cpuMsEach + floor.serverMsPerRequest;
  const ceiling = peer === undefined ? undefined : peer.serverMsPerCert / least;
  if (ceiling !== undefined)
    console.log(
      `ceiling    cfssl's whole request ${f2(peer!.serverMsPerCert)} ms / (keyferry's CSR verify + certificate ${f2(inProcess.cpuMsEach)} ms + the request floor ${f2(floor.serverMsPerRequest)} ms) = ratio ${f2(ceiling)} at most`,
    );
  const na = (x: number | undefined, f: (x: number) => string) => (x === undefined ? 'n/a' : f(x));
  console.log(
    `RESULT keyferry_certs_per_s=${f1(kf.perSecond)} cfssl_certs_per_s=${na(peer?.perSecond, f1)} ratio=${na(ratio, f2)} ` +
      `cfssl_stored_certs_per_s=${na(stored?.perSecond, f1)} ratio_stored=${na(ratioStored, f2)} ` +
      `inprocess_ms_per_cert=${f2(inProcess.cpuMsEach)} request_floor_ms=${f2(floor.serverMsPerRequest)} ratio_ceiling=${na(ceiling, f2)}`,
  );
} finally {
  await fleet?.daemon.stop();
  rmSync(work, { recursive: true, force: true });
}
if (failed > 0) process.exitCode = 1;

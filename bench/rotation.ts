/**
 * `npm run bench:rotation`: a fleet rotating its keys (docs/performance.md). A real keyferryd
 * pinned to one core provisions N devices (and a warm-up's more), then every device enrolls a
 * new key (EST simpleenroll with a new CSR, which revokes its previous certificate) and reports
 * it — the warm-up's first, unmeasured, then the N in batches: the CA's CRL grows by one entry
 * a device. Per batch it prints the server CPU per
 * rekey (keyferryd's /proc, the CRL re-signs included: each batch ends with a fetch of the
 * CRL, which waits for the current one) and the CRL's size; the first batch, on a short CRL, is
 * the peer of the last, on the whole fleet's, under the same client, cores and keyferryd.
 * With `--storage postgres` keyferryd runs on PostgreSQL (a throwaway cluster, or
 * `--postgres-url`), and the database's CPU per rekey is printed beside keyferryd's.
 * `--revoked N` gives the CA N revoked certificates before the rekeys, so every re-sign lists
 * them: a fleet's CRL at scale. Each batch prints its rekeys' p99 wall time too, which a
 * re-sign holding the event loop shows in.
 * Ends with `RESULT devices=… revoked=… crl_bytes=… first_ms_per_rekey=… last_ms_per_rekey=…
 * growth=… storage=… db_ms_per_rekey=… p99_ms=…` (p99 over every measured rekey): growth near 1
 * means a rekey costs the same however long the CRL.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCsr, softSigner } from '@keyferry/core';
import Database from 'better-sqlite3';
import pg from 'pg';
import { buildAll } from '../scripts/build.ts';
import {
  type BenchDatabase,
  benchPostgres,
  checkPostgresUrl,
  postgresUrlOption,
  storageOption,
} from './lib/bench-postgres.ts';
import {
  deviceAgent,
  type Fleet,
  makeDevices,
  provision,
  report,
  type SimDevice,
  simpleenroll,
  startFleet,
} from './lib/device-link-load.ts';
import { Failures, percentiles, runPool } from './lib/keep-alive-client.ts';
import { benchOptions, positiveInteger } from './lib/options.ts';
import { choosePinning, describePinning, pin, treeCpuFromNow, treeCpuMs } from './lib/process-stats.ts';

const options = benchOptions(
  "Usage: npm run bench:rotation [-- options]\n\nProvisions simulated devices through a real keyferryd, then rekeys them all in batches while\nthe CA's CRL grows; prints server CPU per rekey and CRL size per batch, ending with a RESULT line.",
  {
    devices: {
      value: 'N',
      default: '3000',
      help: 'devices provisioned, then rekeyed',
      check: positiveInteger,
    },
    batches: { value: 'N', default: '5', help: 'batches the rekeys are measured in', check: positiveInteger },
    warmup: {
      value: 'N',
      default: '500',
      help: 'devices more, provisioned and rekeyed before the batches (V8 optimises the rekey meanwhile)',
      check: positiveInteger,
    },
    concurrency: { value: 'N', default: '16', help: 'devices in flight', check: positiveInteger },
    revoked: {
      value: 'N',
      default: '0',
      help: 'revoked certificates the CA lists before the rekeys (as a fleet that rotated before leaves; e.g. 60000)',
      check: (t) => (/^(0|[1-9][0-9]*)$/.test(t) ? undefined : 'takes a non-negative integer'),
    },
    storage: storageOption('keyferryd storage'),
    'postgres-url': postgresUrlOption,
    'no-build': { value: '', help: 'run the programs as built (the test suite builds them first)' },
  },
);
const n = (name: 'devices' | 'batches' | 'concurrency' | 'warmup' | 'revoked') => Number(options[name]);
checkPostgresUrl(options);
const storage = options.storage as 'sqlite' | 'postgres';
if (n('batches') > n('devices')) {
  console.error(
    `--batches ${n('batches')} is more than --devices ${n('devices')}\nRun with --help for the options.`,
  );
  process.exit(2);
}
const say = (line: string) => console.error(`[bench] ${line}`);
const f2 = (x: number) => x.toFixed(2);
const pinning = choosePinning();
pin(process.pid, 'none' in pinning ? undefined : pinning.client);

interface Batch {
  rekeyed: number;
  failed: number;
  seconds: number;
  serverCpuMs: number;
  /** The PostgreSQL server's processes; undefined on SQLite or with --postgres-url. */
  databaseCpuMs: number | undefined;
  revoked: number;
  crlBytes: number;
  /** Each rekey's wall time: a device's new connection, enrollment and report. */
  ms: number[];
}

/** Every intermediate CA's CRL, as a relying party fetches it; returns the largest one's size and entry count. */
async function largestCrl(
  fleet: Fleet,
  caIds: readonly number[],
): Promise<{ bytes: number; number: number }> {
  let largest = { bytes: 0, number: 0 };
  for (const id of caIds) {
    const res = await fetch(new URL(`/crl/demo/${id}.crl`, fleet.daemon.listen.api));
    if (!res.ok) throw new Error(`GET /crl/demo/${id}.crl answered ${res.status}: ${await res.text()}`);
    const bytes = (await res.arrayBuffer()).byteLength;
    if (bytes > largest.bytes) largest = { bytes, number: Number(res.headers.get('x-crl-number')) };
  }
  return largest;
}

/**
 * Each device of `devices` on a new connection: simpleenroll with its new CSR, then the report.
 * The failures, and each rekey's wall time in ms.
 */
async function rekey(
  fleet: Fleet,
  devices: readonly SimDevice[],
): Promise<{ failures: Failures; ms: number[] }> {
  const failures = new Failures();
  const ms: number[] = [];
  await runPool(
    devices.length,
    n('concurrency'),
    async (i) => {
      const device = devices[i]!;
      const began = performance.now();
      const agent = deviceAgent(fleet, device);
      try {
        await simpleenroll(fleet, agent, device);
        await report(fleet, agent);
        ms.push(performance.now() - began);
      } finally {
        agent.destroy();
      }
    },
    failures,
  );
  return { failures, ms };
}

/**
 * Adds `count` revoked certificates to the CA of the first provisioned device's certificate, as
 * a fleet that rotated before leaves them: copies of its row with random serials, each revoked
 * (superseded) and expiring a second after the one before, so the CRL lists them all.
 */
async function addRevoked(dataDir: string, databaseUrl: string | undefined, count: number): Promise<void> {
  const first = '(SELECT * FROM certificates WHERE revoked_at IS NULL ORDER BY id LIMIT 1) c';
  if (databaseUrl === undefined) {
    const sqlite = new Database(join(dataDir, 'keyferry.db'), { timeout: 10_000 });
    try {
      const at = (column: string) => `strftime('%Y-%m-%dT%H:%M:%fZ', ${column}, '+' || g.n || ' seconds')`;
      sqlite
        .prepare(
          `WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?)
          INSERT INTO certificates (factory_id, device_row_id, secure_object_id, ca_id, serial_hex,
            public_key_sha256, subject_cn, pem, not_before, not_after, issued_at, revoked_at, revocation_reason)
          SELECT c.factory_id, c.device_row_id, c.secure_object_id, c.ca_id, lower(hex(randomblob(16))),
            c.public_key_sha256, c.subject_cn, c.pem, c.not_before, ${at('c.not_after')}, c.issued_at,
            ${at("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day')")}, 'superseded'
          FROM g, ${first}`,
        )
        .run(count);
    } finally {
      sqlite.close();
    }
    return;
  }
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const at = (time: string) =>
      `to_char((${time} + g.n * interval '1 second') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
    await client.query(
      `INSERT INTO certificates (factory_id, device_row_id, secure_object_id, ca_id, serial_hex,
        public_key_sha256, subject_cn, pem, not_before, not_after, issued_at, revoked_at, revocation_reason)
      SELECT c.factory_id, c.device_row_id, c.secure_object_id, c.ca_id, md5(random()::text || g.n),
        c.public_key_sha256, c.subject_cn, c.pem, c.not_before, ${at('c.not_after::timestamptz')}, c.issued_at,
        ${at("now() - interval '1 day'")}, 'superseded'
      FROM generate_series(1, $1::integer) g(n), ${first}`,
      [count],
    );
  } finally {
    await client.end();
  }
}

const work = mkdtempSync(join(tmpdir(), 'keyferry-bench-rotation-'));
let fleet: Fleet | undefined;
let database: BenchDatabase | undefined;
let failed = 0;
try {
  say(`node ${process.version}; ${describePinning(pinning)}`);
  if (options['no-build'] !== 'true') await buildAll();
  if (storage === 'postgres') database = await benchPostgres(options['postgres-url'], say);
  fleet = await startFleet(join(work, 'data'), {
    ...(database ? { storageUrl: database.url } : {}),
    ...('none' in pinning ? {} : { core: pinning.server }),
  });
  const total = n('warmup') + n('devices');
  say(`keyferryd pid ${fleet.pid}; making, allow-listing and provisioning ${total} devices`);
  const all = await makeDevices(fleet, total);
  const provisioned = await provision(fleet, all, n('concurrency'));
  failed += provisioned.failures.count;
  const cas = (await fleet.api('GET', '/ota/factories/demo/el2g/intermediate-cas/')) as Array<{ id: number }>;
  const caIds = cas.map((ca) => ca.id);
  say('making a new key and CSR for every device (device-side work, before the clock)');
  const rekeyed: SimDevice[] = [];
  for (const device of all) {
    const csrDer = await createCsr({
      subject: { CN: 'device' },
      signer: softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey),
    });
    rekeyed.push({ ...device, csrDer });
  }
  if (n('revoked') > 0) {
    say(`adding ${n('revoked')} revoked certificates to the CA before the rekeys`);
    await addRevoked(join(work, 'data'), database?.url, n('revoked'));
  }
  say(`warm-up: ${n('warmup')} devices rekeyed`);
  const warm = (await rekey(fleet, rekeyed.slice(0, n('warmup')))).failures;
  failed += warm.count;
  const measured = rekeyed.slice(n('warmup'));
  await largestCrl(fleet, caIds);
  const size = Math.ceil(measured.length / n('batches'));
  let revoked = n('revoked') + n('warmup') - warm.count;
  const batches: Batch[] = [];
  for (let start = 0; start < measured.length; start += size) {
    const batch = measured.slice(start, start + size);
    const cpu0 = treeCpuMs(fleet.pids);
    const databaseCpu = database?.pid === undefined ? undefined : treeCpuFromNow(database.pid);
    const t0 = performance.now();
    const { failures, ms } = await rekey(fleet, batch);
    // the batch's CRL re-signs count too: the fetch waits for a current CRL
    const crl = await largestCrl(fleet, caIds);
    revoked += batch.length - failures.count;
    const done: Batch = {
      rekeyed: batch.length - failures.count,
      failed: failures.count,
      seconds: (performance.now() - t0) / 1000,
      serverCpuMs: treeCpuMs(fleet.pids) - cpu0,
      databaseCpuMs: databaseCpu?.stop(),
      revoked,
      crlBytes: crl.bytes,
      ms,
    };
    failed += failures.count;
    if (failures.count > 0)
      say(`batch ${batches.length + 1}: ${failures.count} failed\n${failures.lines().join('\n')}`);
    batches.push(done);
    say(`batch ${batches.length}: ${done.rekeyed} rekeyed, CRL ${crl.bytes} bytes (number ${crl.number})`);
  }
  await fleet.stop();
  fleet = undefined;

  const perRekey = (b: Batch) => b.serverCpuMs / Math.max(1, b.rekeyed);
  const dbPerRekey = (b: Batch) =>
    b.databaseCpuMs === undefined ? undefined : b.databaseCpuMs / Math.max(1, b.rekeyed);
  const first = batches[0]!;
  const last = batches[batches.length - 1]!;
  console.log(`keyferry rotation bench — node ${process.version}, ${storage}, ${describePinning(pinning)}`);
  console.log(
    `fleet:    ${provisioned.provisioned} devices provisioned (${provisioned.failures.count} failed), then each rekeyed (new key: its previous certificate revoked), ${n('warmup')} as a warm-up and ${measured.length} in ${batches.length} batches, ${n('concurrency')} in flight`,
  );
  for (const [i, b] of batches.entries()) {
    console.log(
      `batch ${String(i + 1).padStart(2)}: ${b.rekeyed} rekeys (${b.failed} failed), ${f2(b.rekeyed / b.seconds)} rekeys/s, p99 ${percentiles(b.ms).p99.toFixed(1)} ms, ${f2(perRekey(b))} ms server CPU per rekey (CRL re-signs included)${b.databaseCpuMs === undefined ? '' : ` + ${f2(dbPerRekey(b)!)} ms the database's`}; CRL then ${b.revoked} entries, ${b.crlBytes} bytes`,
    );
  }
  const growth = perRekey(first) > 0 ? f2(perRekey(last) / perRekey(first)) : 'n/a';
  console.log(
    `growth:   the last batch's CPU per rekey / the first's = ${growth} (1 = a rekey costs the same however long the CRL)`,
  );
  console.log(
    `RESULT devices=${provisioned.provisioned} revoked=${last.revoked} crl_bytes=${last.crlBytes} first_ms_per_rekey=${f2(perRekey(first))} last_ms_per_rekey=${f2(perRekey(last))} growth=${growth} storage=${storage} db_ms_per_rekey=${dbPerRekey(last) === undefined ? 'n/a' : f2(dbPerRekey(last)!)} p99_ms=${percentiles(batches.flatMap((b) => b.ms)).p99.toFixed(1)}`,
  );
  if (failed > 0) console.log(`failed:   ${failed} (see stderr)`);
} finally {
  await fleet?.stop();
  database?.stop();
  rmSync(work, { recursive: true, force: true });
}
if (failed > 0) process.exitCode = 1;

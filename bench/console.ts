/**
 * The web console's overview at fleet scale: a fresh SQLite keyferryd whose factory holds
 * 50,000 allow-listed devices (added over the management API in the CLI's batches), most of
 * them provisioned within the rate chart's window, some waiting, some failed. Signs in as a
 * browser would and times GET /console/ — the whole server-rendered page — against the
 * issue's limit of 200 ms. Prints the median of several runs, CPU time beside wall time.
 * Run: `npm run bench:console [-- --devices N]`.
 *
 * The provisioning states are written straight into device_objects: provisioning 50,000
 * devices over the device-link would take this machine about twenty minutes (npm run bench
 * measures that path) and the overview reads only the rows, not how they got there.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startService, validateConfig } from '@keyferry/server';
import { recomputeDeviceStates } from '../packages/server/src/allowlist/device-state.ts';
import { findFactoryById } from '../packages/server/src/factories/factories.ts';
import { LIVE_PUSH_MS } from '../packages/server/src/http/console/event-streams.ts';
import { loadLive } from '../packages/server/src/http/console/overview-page.ts';
import { setupDeviceGateway } from '../test/support/device-link.ts';
import { benchOptions, positiveInteger } from './lib/options.ts';

const options = benchOptions(
  "Usage: npm run bench:console [-- options]\n\nFills a fresh SQLite keyferryd with allow-listed devices in every provisioning state and times\nthe web console's overview (GET /console/) against its 200 ms limit, and its other pages.",
  {
    devices: { value: 'N', default: '50000', help: 'devices of the factory', check: positiveInteger },
  },
);
const total = Number(options.devices);
const LIMIT_MS = 200;
const RUNS = 15;
const WARMUP = 3;
const BATCH = 1_000;
const SE050 = '935389312472';
/** Shares of the fleet by state: the rest never connected. */
const COMPLETED = 0.8;
const TRIGGERED = 0.1;
const FAILED = 0.01;

const dataDir = mkdtempSync(join(tmpdir(), 'keyferry-bench-console-'));
const config = validateConfig({
  dataDir,
  api: { listen: '127.0.0.1:0' },
  deviceLink: { listen: '127.0.0.1:0' },
  gateway: { listen: '127.0.0.1:0' },
  log: { level: 'silent' },
  el2g: { plan: { kind: 'commercial', maxDevicesPerYear: Math.max(total, 1) } },
});
const service = await startService({ config, embeddedDefaults: true });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
try {
  const api = service.addresses.api;
  const token = service.demo!.token;
  await setupDeviceGateway(api, token);
  const ids = Array.from({ length: total }, (_, i) => `0x04${i.toString(16).padStart(34, '0')}`);
  for (let i = 0; i < ids.length; i += BATCH) {
    const res = await fetch(`${api}/ota/factories/demo/el2g/devices/`, {
      method: 'POST',
      headers: { 'osf-token': token, 'content-type': 'application/json' },
      body: JSON.stringify({ 'product-id': SE050, devices: ids.slice(i, i + BATCH) }),
    });
    if (!res.ok) throw new Error(`POST answered ${res.status}: ${await res.text()}`);
  }

  const db = service.ctx.database.db;
  const objects = await db.selectFrom('secure_objects').select('id').orderBy('id').execute();
  const rows = await db.selectFrom('devices').select('id').orderBy('id').execute();
  const now = Date.now();
  const values = rows.flatMap((d, i) => {
    const share = i / rows.length;
    if (share >= COMPLETED + TRIGGERED + FAILED) return [];
    // completions spread over the last 25 minutes, so every bar of the chart has some
    const at = new Date(now - (i % 1_500) * 1_000).toISOString();
    return objects.map((o, k) => {
      const failed = share >= COMPLETED + TRIGGERED && k === objects.length - 1;
      const state =
        share < COMPLETED
          ? 'PROVISIONING_COMPLETED'
          : failed
            ? 'PROVISIONING_FAILED'
            : 'GENERATION_TRIGGERED';
      return {
        device_row_id: d.id,
        secure_object_id: o.id,
        state: state as 'PROVISIONING_COMPLETED',
        reason: failed ? 'the device reported a failure: no space left in the secure element' : null,
        updated_at: at,
      };
    });
  });
  for (let i = 0; i < values.length; i += 500) {
    await db
      .insertInto('device_objects')
      .values(values.slice(i, i + 500))
      .execute();
  }
  const factory = await db
    .selectFrom('factories')
    .select('id')
    .where('name', '=', 'demo')
    .executeTakeFirstOrThrow();
  await recomputeDeviceStates(db, factory.id);

  const signIn = await fetch(`${api}/console/sign-in`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }).toString(),
  });
  const cookie = signIn.headers.get('set-cookie')?.split(';')[0];
  if (signIn.status !== 303 || !cookie) throw new Error(`sign-in answered ${signIn.status}`);

  const timePage = async (path: string) => {
    const wall: number[] = [];
    const cpu: number[] = [];
    for (let i = 0; i < WARMUP + RUNS; i++) {
      const cpuStart = process.cpuUsage();
      const start = performance.now();
      const res = await fetch(api + path, { headers: { cookie, accept: 'text/html' } });
      const body = await res.text();
      const ms = performance.now() - start;
      const used = process.cpuUsage(cpuStart);
      if (res.status !== 200) throw new Error(`${path} answered ${res.status}: ${body.slice(0, 200)}`);
      if (i >= WARMUP) {
        wall.push(ms);
        cpu.push((used.user + used.system) / 1000);
      }
    }
    return { wall: median(wall), cpu: median(cpu), worst: Math.max(...wall) };
  };

  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
  console.log(
    `web console on SQLite: ${fmt(total)} devices (${fmt(values.length)} object states), median of ${RUNS} runs after ${WARMUP} warm-up`,
  );
  const overview = await timePage('/console/');
  console.log(
    `overview  GET /console/: ${overview.wall.toFixed(1)} ms wall, ${overview.cpu.toFixed(1)} ms CPU (slowest ${overview.worst.toFixed(1)} ms); ` +
      `limit ${LIMIT_MS} ms: ${(overview.wall / LIMIT_MS).toFixed(2)} of the limit (${(LIMIT_MS / overview.wall).toFixed(1)}x under it)`,
  );
  for (const [label, path] of [
    ['devices   first page', '/console/devices'],
    ['devices   by state (failed)', '/console/devices?state=PROVISIONING_FAILED'],
    ['device    one page', `/console/devices/${ids[0]}`],
  ] as const) {
    const t = await timePage(path);
    console.log(`${label}: ${t.wall.toFixed(1)} ms wall, ${t.cpu.toFixed(1)} ms CPU`);
  }
  // what a factory's open overviews cost while they follow live updates: one push every LIVE_PUSH_MS, shared
  const pushCpu: number[] = [];
  const pushWall: number[] = [];
  const demo = (await findFactoryById(db, factory.id))!;
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const cpuStart = process.cpuUsage();
    const start = performance.now();
    await loadLive(db, demo);
    const ms = performance.now() - start;
    const used = process.cpuUsage(cpuStart);
    if (i >= WARMUP) {
      pushWall.push(ms);
      pushCpu.push((used.user + used.system) / 1000);
    }
  }
  console.log(
    `live push (rate and states, every ${LIVE_PUSH_MS / 1000} s while a factory has an overview open): ${median(pushWall).toFixed(1)} ms wall, ${median(pushCpu).toFixed(1)} ms CPU`,
  );
  if (overview.wall > LIMIT_MS) {
    console.error(`FAIL: the overview took ${overview.wall.toFixed(1)} ms, over the ${LIMIT_MS} ms limit`);
    process.exitCode = 1;
  }
} finally {
  await service.close();
  rmSync(dataDir, { recursive: true, force: true });
}

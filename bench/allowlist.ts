/**
 * Allow-list at fleet scale: imports N device ids over the management API in the CLI's batches
 * (1,000 ids a request) into a fresh SQLite keyferryd, then lists them page by page as
 * `keyferry el2g devices` does, and fetches the first page again and again (what the command
 * shows first). keyferryd runs as its own process, pinned to one core with the bench on the
 * other, so its CPU (from /proc) is apart from the client's; each run starts a fresh one.
 * Prints medians of the runs beside the bar (50,000 ids in well under a minute) and
 * ends with a RESULT line. Run: `npm run bench:allowlist [-- options]`.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildAll } from '../scripts/build.ts';
import { startKeyferryd } from '../test/support/processes.ts';
import { median } from './lib/keep-alive-client.ts';
import { benchOptions, positiveInteger } from './lib/options.ts';
import {
  choosePinning,
  describePinning,
  ownCpuMs,
  peakRssMb,
  pin,
  processCpuMs,
} from './lib/process-stats.ts';

const options = benchOptions(
  'Usage: npm run bench:allowlist [-- options]\n\nImports device ids into a fresh SQLite keyferryd over the management API, 1,000 a request, then\nlists them 1,000 a page; prints ids/s and keyferryd CPU per 1,000, ending with a RESULT line.',
  {
    ids: { value: 'N', default: '50000', help: 'device ids imported, then listed', check: positiveInteger },
    runs: {
      value: 'N',
      default: '3',
      help: 'runs, each on a fresh keyferryd; the medians are printed',
      check: positiveInteger,
    },
    'first-pages': {
      value: 'N',
      default: '200',
      help: 'fetches of the first page after the listing (its CPU per fetch)',
      check: positiveInteger,
    },
    'no-build': { value: '', help: 'run the programs as built (the test suite builds them first)' },
  },
);
const total = Number(options.ids);
const BATCH = 1_000;
const PAGE = 1_000;
const BAR_IDS_PER_SECOND = 50_000 / 60;
const NC12 = '935389312472';

const say = (line: string) => console.error(`[bench] ${line}`);
const pinning = choosePinning();
pin(process.pid, 'none' in pinning ? undefined : pinning.client);
if (options['no-build'] !== 'true') await buildAll();

interface Run {
  importSeconds: number;
  importServerMs: number;
  importClientMs: number;
  listSeconds: number;
  listServerMs: number;
  listClientMs: number;
  firstPageServerMs: number;
  firstPageMs: number;
  rssMb: number;
}

const ids = Array.from({ length: total }, (_, i) => `0x04${i.toString(16).padStart(34, '0')}`);
const work = mkdtempSync(join(tmpdir(), 'keyferry-bench-allowlist-'));

/** One run: a fresh keyferryd, the import, the listing, the first page again and again. */
async function measure(run: number): Promise<Run> {
  const dataDir = join(work, `run-${run}`);
  const configFile = join(work, `config-${run}.json`);
  writeFileSync(
    configFile,
    JSON.stringify({
      demoFactory: { enabled: true },
      el2g: { plan: { kind: 'commercial', maxDevicesPerYear: total } },
    }),
  );
  const daemon = await startKeyferryd(dataDir, { args: ['--config', configFile] });
  try {
    const pid = daemon.child.pid!;
    pin(pid, 'none' in pinning ? undefined : pinning.server);
    const token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
    const headers = { 'osf-token': token, 'content-type': 'application/json' };
    const base = `${daemon.listen.api}/ota/factories/demo/el2g/devices/`;
    const answered = async (res: Response, what: string) => {
      if (!res.ok) throw new Error(`${what} answered ${res.status}: ${await res.text()}`);
      return res;
    };
    const clock = () => ({ wall: performance.now(), server: processCpuMs(pid), client: ownCpuMs() });
    const since = (from: ReturnType<typeof clock>) => {
      const now = clock();
      return {
        seconds: (now.wall - from.wall) / 1000,
        server: now.server - from.server,
        client: now.client - from.client,
      };
    };

    let from = clock();
    let added = 0;
    for (let i = 0; i < ids.length; i += BATCH) {
      const res = await answered(
        await fetch(base, {
          method: 'POST',
          headers,
          body: JSON.stringify({ 'product-id': NC12, devices: ids.slice(i, i + BATCH) }),
        }),
        `POST of ids ${i + 1}–${Math.min(i + BATCH, ids.length)}`,
      );
      added += ((await res.json()) as { counts: { added: number } }).counts.added;
    }
    const imported = since(from);
    if (added !== total) throw new Error(`expected ${total} ids added, keyferryd added ${added}`);

    from = clock();
    let listed = 0;
    let url = `${base}?limit=${PAGE}`;
    for (;;) {
      const res = await answered(await fetch(url, { headers }), `GET ${url}`);
      listed += ((await res.json()) as unknown[]).length;
      const next = res.headers.get('x-next-cursor');
      if (!next) break;
      url = `${base}?limit=${PAGE}&after=${next}`;
    }
    const listing = since(from);
    if (listed !== total) throw new Error(`expected ${total} ids listed, keyferryd listed ${listed}`);

    from = clock();
    for (let i = 0; i < Number(options['first-pages']); i++) {
      const res = await answered(await fetch(`${base}?limit=${PAGE}`, { headers }), 'GET of the first page');
      await res.arrayBuffer();
    }
    const firstPages = since(from);
    const fetches = Number(options['first-pages']);
    return {
      importSeconds: imported.seconds,
      importServerMs: imported.server,
      importClientMs: imported.client,
      listSeconds: listing.seconds,
      listServerMs: listing.server,
      listClientMs: listing.client,
      firstPageServerMs: firstPages.server / fetches,
      firstPageMs: (firstPages.seconds * 1000) / fetches,
      rssMb: peakRssMb(pid),
    };
  } finally {
    await daemon.stop();
  }
}

try {
  const runs: Run[] = [];
  for (let r = 1; r <= Number(options.runs); r++) {
    say(`run ${r} of ${options.runs}: ${total} ids into a fresh keyferryd`);
    runs.push(await measure(r));
  }
  const med = (pick: (r: Run) => number) => median(runs.map(pick));
  const each = (pick: (r: Run) => number, digits: number) =>
    runs.map((r) => pick(r).toFixed(digits)).join(' / ');
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
  const perThousand = (ms: number) => (ms * 1000) / total;
  const importRate = med((r) => total / r.importSeconds);
  const listRate = med((r) => total / r.listSeconds);
  const importServer = med((r) => perThousand(r.importServerMs));
  const listServer = med((r) => perThousand(r.listServerMs));
  const firstPage = med((r) => r.firstPageServerMs);
  console.log(
    `keyferry allow-list bench — node ${process.version}, SQLite, ${describePinning(pinning)}; ` +
      `${fmt(total)} ids, batches of ${fmt(BATCH)}, pages of ${fmt(PAGE)}, medians of ${runs.length} run(s)`,
  );
  console.log(
    `import:     ${fmt(importRate)} ids/s (${each((r) => total / r.importSeconds, 0)}); keyferryd ` +
      `${importServer.toFixed(1)} ms CPU per 1,000 ids (${each((r) => perThousand(r.importServerMs), 1)}), client ` +
      `${med((r) => perThousand(r.importClientMs)).toFixed(1)}; the bar, 50,000 ids a minute, is ` +
      `${fmt(BAR_IDS_PER_SECOND)} ids/s: ${(importRate / BAR_IDS_PER_SECOND).toFixed(1)}x the bar`,
  );
  console.log(
    `list:       ${fmt(listRate)} rows/s (${each((r) => total / r.listSeconds, 0)}); keyferryd ` +
      `${listServer.toFixed(1)} ms CPU per page of 1,000 (${each((r) => perThousand(r.listServerMs), 1)}), client ` +
      `${med((r) => perThousand(r.listClientMs)).toFixed(1)}`,
  );
  console.log(
    `first page: ${med((r) => r.firstPageMs).toFixed(1)} ms wall, keyferryd ${firstPage.toFixed(2)} ms CPU ` +
      `per fetch (${each((r) => r.firstPageServerMs, 2)}; ${options['first-pages']} fetches a run)`,
  );
  console.log(`memory:     keyferryd peak RSS ${med((r) => r.rssMb).toFixed(1)} MB`);
  console.log(
    `RESULT ids=${total} runs=${runs.length} import_ids_per_s=${importRate.toFixed(0)} ` +
      `import_server_ms_per_1000=${importServer.toFixed(2)} list_rows_per_s=${listRate.toFixed(0)} ` +
      `list_server_ms_per_page=${listServer.toFixed(2)} first_page_server_ms=${firstPage.toFixed(2)} ` +
      `bar_ratio=${(importRate / BAR_IDS_PER_SECOND).toFixed(1)} rss_mb=${med((r) => r.rssMb).toFixed(1)}`,
  );
} finally {
  rmSync(work, { recursive: true, force: true });
}

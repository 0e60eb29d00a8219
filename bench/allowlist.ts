/**
 * Allow-list at fleet scale: imports N device ids over the management API in the CLI's batches
 * (1,000 ids a request) into a fresh SQLite keyferryd, then lists them page by page as
 * `keyferry el2g devices` does. Prints ids/s and rows/s beside the bar (50,000 ids in
 * well under a minute). Run: `npm run bench:allowlist [-- <ids>]`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startService, validateConfig } from '@keyferry/server';

const total = Number(process.argv[2] ?? 50_000);
if (!(Number.isInteger(total) && total > 0)) throw new TypeError('usage: npm run bench:allowlist [-- <ids>]');
const BATCH = 1_000;
const PAGE = 1_000;
const BAR_IDS_PER_SECOND = 50_000 / 60;

const dataDir = mkdtempSync(join(tmpdir(), 'keyferry-bench-allowlist-'));
const config = validateConfig({
  dataDir,
  api: { listen: '127.0.0.1:0' },
  deviceLink: { listen: '127.0.0.1:0' },
  gateway: { listen: '127.0.0.1:0' },
  log: { level: 'silent' },
  el2g: { plan: { kind: 'commercial', maxDevicesPerYear: Math.max(total, 1) } },
});
const service = await startService({ config, embeddedDefaults: true });
try {
  const headers = { 'osf-token': service.demo!.token, 'content-type': 'application/json' };
  const base = `${service.addresses.api}/ota/factories/demo/el2g/devices/`;
  const ids = Array.from({ length: total }, (_, i) => '0x04' + i.toString(16).padStart(34, '0'));

  let start = performance.now();
  let added = 0;
  for (let i = 0; i < ids.length; i += BATCH) {
    const res = await fetch(base, {
      method: 'POST',
      headers,
      body: JSON.stringify({ 'product-id': '935389312472', devices: ids.slice(i, i + BATCH) }),
    });
    if (!res.ok) throw new Error(`POST answered ${res.status}: ${await res.text()}`);
    added += ((await res.json()) as { counts: { added: number } }).counts.added;
  }
  const importSeconds = (performance.now() - start) / 1000;
  if (added !== total) throw new Error(`expected ${total} added, got ${added}`);

  start = performance.now();
  let listed = 0;
  let url = `${base}?limit=${PAGE}`;
  for (;;) {
    const res = await fetch(url, { headers });
    listed += ((await res.json()) as unknown[]).length;
    const next = res.headers.get('x-next-cursor');
    if (!next) break;
    url = `${base}?limit=${PAGE}&after=${next}`;
  }
  const listSeconds = (performance.now() - start) / 1000;
  if (listed !== total) throw new Error(`expected ${total} listed, got ${listed}`);

  const importRate = total / importSeconds;
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
  console.log(`allow-list on SQLite, ${fmt(total)} ids, batches of ${BATCH}, pages of ${PAGE}`);
  console.log(
    `import: ${fmt(importRate)} ids/s (${importSeconds.toFixed(2)} s); the bar, 50,000 ids a minute, is ` +
      `${fmt(BAR_IDS_PER_SECOND)} ids/s: ${(importRate / BAR_IDS_PER_SECOND).toFixed(1)}x the bar; ` +
      `50,000 ids would take ${(50_000 / importRate).toFixed(1)} s`,
  );
  console.log(`list:   ${fmt(total / listSeconds)} rows/s (${listSeconds.toFixed(2)} s)`);
} finally {
  await service.close();
  rmSync(dataDir, { recursive: true, force: true });
}

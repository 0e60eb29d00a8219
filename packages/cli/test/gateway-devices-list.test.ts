import { describe, expect, it } from 'vitest';
import type { ApiClient } from '../src/api-client.ts';
import { type GatewayDevice, listGatewayDevices } from '../src/commands/devices.ts';
import { formatTable, type Output } from '../src/output.ts';

const PAGES = 3;
const PER_PAGE = 1_000;

/** Device `n`; names of different lengths, so that the NAME column is as wide as the widest of all pages. */
const device = (n: number): GatewayDevice => ({
  name: `${'d'.repeat(1 + (n % 37))}-${n}-größe`,
  factory: 'demo',
  'cert-fingerprint': `fp-${n}`,
  'cert-serial': n.toString(16).padStart(32, '0'),
  'first-seen': `2026-11-29T10:01:02.${String(n % 1000).padStart(3, '0')}Z`,
  'last-seen': '2026-11-30T08:00:00.000Z',
});
const all = Array.from({ length: PAGES * PER_PAGE }, (_, n) => device(n));

/**
 * The device gateway's listing in pages of 1000 (x-next-cursor), as `GET devices/` answers. Its
 * answers share one array of rows, overwritten by the next page: a listing that kept the rows
 * of a page after asking for the next one (memory growing with the fleet) prints the last page
 * over and over.
 */
function pagedApi(): { api: ApiClient; asked: string[] } {
  const asked: string[] = [];
  const rows: GatewayDevice[] = Array.from({ length: PER_PAGE }, () => ({}) as GatewayDevice);
  const api = {
    factoryPath: (path: string) => `/ota/factories/demo/${path}`,
    callWithHeaders: async (_method: string, path: string) => {
      asked.push(path);
      const at = Number(/[?&]after=(\d+)/.exec(path)?.[1] ?? 0);
      for (const [i, row] of rows.entries()) Object.assign(row, all[at + i]);
      const next = at + PER_PAGE < all.length ? String(at + PER_PAGE) : undefined;
      return { body: rows, status: 200, headers: next === undefined ? {} : { 'x-next-cursor': next } };
    },
  };
  return { api: api as unknown as ApiClient, asked };
}

async function list(json: boolean): Promise<{ stdout: string; writes: number; asked: string[] }> {
  const { api, asked } = pagedApi();
  const chunks: Buffer[] = [];
  const out: Output = {
    json,
    write: (text) => chunks.push(Buffer.from(text)),
    error: () => {},
    drained: async () => {},
  };
  await listGatewayDevices({ api, out });
  return { stdout: Buffer.concat(chunks).toString('utf8'), writes: chunks.length, asked };
}

describe('keyferry devices list over many pages (was: every page held in one array)', () => {
  it('--json prints what printJson printed for the whole array, byte for byte, from the spool', async () => {
    const res = await list(true);
    expect(res.asked).toEqual([
      '/ota/factories/demo/devices/?limit=1000',
      '/ota/factories/demo/devices/?limit=1000&after=1000',
      '/ota/factories/demo/devices/?limit=1000&after=2000',
    ]);
    expect(res.stdout).toBe(JSON.stringify(all, null, 2) + '\n');
    expect(res.writes).toBeGreaterThan(1);
  });

  it('the table is the one formatTable printed for all rows, widths from every page', async () => {
    const res = await list(false);
    expect(res.stdout).toBe(
      formatTable(
        ['NAME', 'FIRST SEEN', 'LAST SEEN', 'CERT SERIAL'],
        all.map((d) => [d.name, d['first-seen'], d['last-seen'], d['cert-serial']]),
      ),
    );
    expect(res.writes).toBeGreaterThan(1);
  });

  it('an empty listing: [] and the table head, as before', async () => {
    const empty = {
      factoryPath: (path: string) => path,
      callWithHeaders: async () => ({ body: [], status: 200, headers: {} }),
    } as unknown as ApiClient;
    for (const json of [true, false]) {
      let stdout = '';
      const out: Output = {
        json,
        write: (t) => (stdout += String(t)),
        error: () => {},
        drained: async () => {},
      };
      await listGatewayDevices({ api: empty, out });
      expect(stdout).toBe(
        json
          ? '[]\n'
          : 'NAME  FIRST SEEN  LAST SEEN  CERT SERIAL\n----  ----------  ---------  -----------\n',
      );
    }
  });
});

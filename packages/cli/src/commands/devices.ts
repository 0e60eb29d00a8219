import type { Command } from 'commander';
import { type CommandContext, commandContext } from '../context.ts';
import { StreamingTable } from '../devices/render.ts';
import { Spool } from '../output.ts';
import { wordlessDefault } from '../usage.ts';

/** Rows asked for per page. */
const PAGE = 1_000;

/** A device registered at the device gateway, as `GET devices/` answers. */
export interface GatewayDevice {
  name: string;
  factory: string;
  'cert-fingerprint': string;
  'cert-serial': string;
  'first-seen': string;
  'last-seen': string;
}

/** `keyferry devices list`: devices registered at the device gateway (docs/api.md). */
export function registerDevices(program: Command): void {
  const devices = program
    .command('devices')
    .description(
      'devices registered at the device gateway (their first call with a provisioned certificate)',
    );
  wordlessDefault(
    devices
      .command('list', { isDefault: true })
      .description('list registered devices: NAME (certificate CN), FIRST SEEN, LAST SEEN, CERT SERIAL'),
  ).action(async (_opts: unknown, command: Command) => listGatewayDevices(commandContext(command)));
}

const HEADERS = ['NAME', 'FIRST SEEN', 'LAST SEEN', 'CERT SERIAL'];

/**
 * Every page goes to a spool as it comes, printed once the last page came (a page that fails
 * leaves stdout empty), so memory stays flat however many devices: --json as printJson would
 * print the array, the table as a line of cells per device, formatted once the widest cell of
 * each column is known.
 */
export async function listGatewayDevices({ api, out }: CommandContext): Promise<void> {
  const spool = new Spool();
  try {
    const widths = HEADERS.map((h) => h.length);
    let first = true;
    if (out.json) spool.write('[');
    let after: string | undefined;
    do {
      const query = `devices/?limit=${PAGE}${after === undefined ? '' : `&after=${encodeURIComponent(after)}`}`;
      const page = await api.callWithHeaders<GatewayDevice[]>('GET', api.factoryPath(query));
      let chunk = '';
      for (const d of page.body) {
        if (out.json) {
          // printJson's indentation one level in (a JSON text has no newline inside a string)
          chunk += `${first ? '\n' : ',\n'}  ${JSON.stringify(d, null, 2).replaceAll('\n', '\n  ')}`;
          first = false;
        } else {
          const cells = [d.name, d['first-seen'], d['last-seen'], d['cert-serial']].map((c) => c ?? '');
          cells.forEach((c, i) => {
            widths[i] = Math.max(widths[i] ?? 0, c.length);
          });
          chunk += `${JSON.stringify(cells)}\n`;
        }
      }
      spool.write(chunk);
      const next = page.headers['x-next-cursor'];
      after = typeof next === 'string' && next !== '' ? next : undefined;
    } while (after !== undefined);
    if (out.json) {
      spool.write(first ? ']\n' : '\n]\n');
      return await spool.copyTo(out);
    }
    const table = new StreamingTable(HEADERS, widths);
    out.write(table.head());
    await spool.copyLinesTo(out, (line) => table.line(JSON.parse(line) as string[]));
  } finally {
    spool.close();
  }
}

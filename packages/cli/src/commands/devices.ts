import type { Command } from 'commander';
import { type CommandContext, commandContext } from '../context.ts';
import { formatTable, printJson } from '../output.ts';
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

async function listGatewayDevices({ api, out }: CommandContext): Promise<void> {
  const rows: GatewayDevice[] = [];
  let after: string | undefined;
  do {
    const query = `devices/?limit=${PAGE}${after === undefined ? '' : `&after=${encodeURIComponent(after)}`}`;
    const page = await api.callWithHeaders<GatewayDevice[]>('GET', api.factoryPath(query));
    rows.push(...page.body);
    const next = page.headers['x-next-cursor'];
    after = typeof next === 'string' && next !== '' ? next : undefined;
  } while (after !== undefined);
  if (out.json) return printJson(out, rows);
  out.write(
    formatTable(
      ['NAME', 'FIRST SEEN', 'LAST SEEN', 'CERT SERIAL'],
      rows.map((d) => [d.name, d['first-seen'], d['last-seen'], d['cert-serial']]),
    ),
  );
}

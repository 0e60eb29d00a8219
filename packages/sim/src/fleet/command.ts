import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { loadOrCreateVendorCa, simDir } from '../se05x/vendor-ca.ts';
import { ManagementApi } from './management-api.ts';
import { FleetStopped, fleetHomes, runFleet, runRenewal } from './run.ts';
import { type FleetSummary, formatSummary } from './stats.ts';

interface FleetOptions {
  devices?: string;
  renew?: boolean;
  force?: boolean;
  product: string;
  server?: string;
  factory?: string;
  token?: string;
  deviceLink?: string;
  deviceLinkCa?: string;
  dir?: string;
  concurrency: string;
  json?: boolean;
}

const MAX_DEVICES = 100_000;

function dataDir(): string {
  return resolve(process.env.KEYFERRY_DATA_DIR || './data');
}

/** `<data dir>/listen.json`, which keyferryd writes once its listeners are up; {} when absent. */
function listenFile(): { api?: string; deviceLink?: string } {
  const path = join(dataDir(), 'listen.json');
  if (!existsSync(path)) return {};
  const what = 'pass --server URL and --device-link HOST:PORT, or restart keyferryd to write it again';
  let listen: unknown;
  try {
    listen = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw new Error(`${path} is not valid JSON (${(error as Error).message}); ${what}`);
  }
  const field = (name: string) => (listen as Record<string, unknown>)[name];
  const fits = (name: string) => field(name) === undefined || typeof field(name) === 'string';
  if (typeof listen !== 'object' || listen === null || !fits('api') || !fits('deviceLink')) {
    throw new Error(
      `${path} is not keyferryd's listen.json ({"api": URL, "deviceLink": HOST:PORT}); ${what}`,
    );
  }
  return listen as { api?: string; deviceLink?: string };
}

function integer(text: string, name: string, min: number, max: number): number {
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || n < min || n > max) {
    throw new Error(`${name} ${text} is not a whole number from ${min} to ${max}`);
  }
  return n;
}

function required(value: string | undefined, what: string): string {
  if (value === undefined || value === '') throw new Error(what);
  return value;
}

/** `keyferry-sim fleet --devices N`: provisions N simulated devices against a service. */
export function registerFleetCommand(program: Command): void {
  program
    .command('fleet')
    .description(
      'provision N simulated devices against a service: make N soft secure elements, allow-list ' +
        'them (1000 a request), run the agent’s auto-register for each, print counts, devices/s and latency',
    )
    .option('--devices <n>', `how many devices, 1 to ${MAX_DEVICES} (needed unless --renew)`)
    .option(
      '--renew',
      'instead of provisioning: a rotation pass over the fleet already in --dir, the agent’s renew for each device ' +
        '(rotates when the manifest says rotate or the certificate is inside its renewal window)',
    )
    .option('--force', 'with --renew: rotate every device, due or not')
    .option('--product <12nc>', 'product 12NC of the simulated secure elements', '935389312472')
    .option('--server <url>', 'management API (default KEYFERRY_SERVER, then <data dir>/listen.json)')
    .option('-f, --factory <name>', 'factory (default KEYFERRY_FACTORY)')
    .option('-t, --token <token>', 'API token with write access to the allow-list (default KEYFERRY_TOKEN)')
    .option('--device-link <host:port>', 'device-link address (default from <data dir>/listen.json)')
    .option(
      '--device-link-ca <file>',
      'CA of the device-link TLS certificate (default <data dir>/service-ca.pem)',
    )
    .option('--dir <dir>', 'where the soft secure elements go (default <data dir>/sim/fleet-<timestamp>)')
    .option('--concurrency <k>', 'auto-register runs in flight', '16')
    .option('--json', 'print the summary as JSON')
    .addHelpText(
      'after',
      '\nThe data dir is KEYFERRY_DATA_DIR (default ./data), shared with keyferryd; the vendor CA is its sim/.' +
        '\nExits 1 when any device failed.',
    )
    .action(async (opts: FleetOptions, command: Command) => {
      if (opts.force && !opts.renew) {
        command.error(
          '--force only applies with --renew (it rotates every device of a rotation pass); ' +
            'drop --force, or pass --renew --dir DIR',
          { exitCode: 2, code: 'keyferry.usage' },
        );
      }
      if (opts.renew && opts.dir === undefined)
        throw new Error('--renew needs --dir DIR: the fleet to rotate');
      if (opts.renew && fleetHomes(resolve(opts.dir ?? '')).length === 0) {
        const dir = resolve(opts.dir ?? '');
        throw new Error(
          `${dir} ${existsSync(dir) ? 'holds no fleet (no device-* directories)' : 'does not exist'}; ` +
            'pass the --dir of a previous fleet run',
        );
      }
      if (!opts.renew && opts.devices === undefined)
        throw new Error('pass --devices N (or --renew --dir DIR)');
      const count = opts.renew ? 0 : integer(opts.devices ?? '', '--devices', 1, MAX_DEVICES);
      const concurrency = integer(opts.concurrency, '--concurrency', 1, 1000);
      if (!/^[0-9]{12}$/.test(opts.product))
        throw new Error(`--product ${opts.product} is not a 12NC (12 digits)`);
      const givenServer = opts.server ?? (process.env.KEYFERRY_SERVER || undefined);
      // read only when needed: a broken one must not stop a run that names both addresses
      const listen = givenServer !== undefined && opts.deviceLink !== undefined ? {} : listenFile();
      const server = required(
        givenServer ?? listen.api,
        `no server given: pass --server URL or set KEYFERRY_SERVER (no ${join(dataDir(), 'listen.json')} either)`,
      );
      const factory = required(
        opts.factory ?? process.env.KEYFERRY_FACTORY,
        'no factory given: pass -f/--factory NAME or set KEYFERRY_FACTORY',
      );
      const token = required(
        opts.token ?? process.env.KEYFERRY_TOKEN,
        'no API token: pass -t/--token or set KEYFERRY_TOKEN',
      );
      const deviceLink = required(
        opts.deviceLink ?? listen.deviceLink,
        `no device-link address: pass --device-link HOST:PORT (no ${join(dataDir(), 'listen.json')} names one)`,
      );
      const deviceLinkCa = resolve(opts.deviceLinkCa ?? join(dataDir(), 'service-ca.pem'));
      if (!existsSync(deviceLinkCa)) {
        throw new Error(`${deviceLinkCa} does not exist; pass --device-link-ca FILE (the service's TLS CA)`);
      }
      const api = new ManagementApi({
        server: /^https?:\/\//.test(server) ? server : `http://${server}`,
        factory,
        token,
      });
      const [repoId, subdomain, root] = await Promise.all([
        api.repoId(),
        api.subdomain(),
        api.rootCertificate(),
      ]);
      // Each device's sota.toml names root.crt to trust the device gateway, and the agent refuses
      // a ROOT_CRT without a certificate: a fleet without it would be provisioned for nothing.
      if (root === undefined) {
        throw new Error(
          `factory ${factory} has no root certificate, which every device needs (its root.crt, ROOT_CRT) ` +
            'to trust the device gateway; make it with keyferry keys ca create and ' +
            'keyferry el2g config-device-gateway, then run again',
        );
      }
      const dir = resolve(
        opts.dir ?? join(simDir(), `fleet-${new Date().toISOString().replace(/[:.]/g, '-')}`),
      );
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const rootCrt = join(dir, 'root.crt');
      writeFileSync(rootCrt, root, { mode: 0o644 });
      const target = { api, product: opts.product, repoId, subdomain, deviceLink, deviceLinkCa, rootCrt };
      if (opts.renew) {
        const renewal = await runRenewal({ target, dir, concurrency, force: opts.force === true });
        process.stdout.write(
          opts.json
            ? `${JSON.stringify(renewal, null, 2)}\n`
            : `${formatSummary(renewal, 'Renewed')}Rotated: ${renewal.rotated}\n`,
        );
        if (renewal.failed > 0) {
          throw new Error(`${renewal.failed} of ${renewal.devices} devices failed; the summary lists why`);
        }
        return;
      }
      const print = (summary: FleetSummary) =>
        process.stdout.write(opts.json ? `${JSON.stringify(summary, null, 2)}\n` : formatSummary(summary));
      let summary: FleetSummary;
      try {
        summary = await runFleet({
          target,
          vendor: await loadOrCreateVendorCa(simDir()),
          count,
          dir,
          concurrency,
        });
      } catch (error) {
        if (!(error instanceof FleetStopped)) throw error;
        // the devices before the stop are provisioned (or failed): the operator needs their counts
        print(error.summary);
        const done = error.summary.provisioned + error.summary.failed;
        throw new Error(
          `the run stopped after ${done} of ${count} devices: ${error.message}; the summary counts what was done`,
        );
      }
      print(summary);
      if (summary.failed > 0) {
        throw new Error(`${summary.failed} of ${count} devices failed; the summary lists why`);
      }
    });
}

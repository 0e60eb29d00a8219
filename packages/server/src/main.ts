import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { endQuietlyWhenOutputCloses, KeyferryError, writeChecked } from '@keyferry/core';
import { Command, Option } from 'commander';
import packageJson from '../package.json' with { type: 'json' };
import {
  adminBackup,
  adminCreateFactory,
  adminCreateToken,
  adminListTokens,
  adminRevokeToken,
  withAdminContext,
  withAdminDatabase,
} from './admin.ts';
import { isClusterWorker, startClusterPrimary, startClusterWorker } from './cluster.ts';
import { loadConfig } from './config/load.ts';
import { type Config, workerCount } from './config/schema.ts';
import { type RunningService, startService } from './service.ts';
import { scopesOfFlag, type TokenInfo } from './tokens/api-tokens.ts';

/** Clears group and other bits of every file and directory keyferryd creates. */
export const PRIVATE_UMASK = 0o077;

/** keyferryd: one process, several listeners. Exits non-zero with one clear line on a bad start. */
export async function main(argv: string[]): Promise<void> {
  // Before any file exists: the database, its WAL, tokens and keys are the operator's alone,
  // whatever umask the shell or unit gave (files 0600, directories 0700).
  process.umask(PRIVATE_UMASK);
  let stop: ((reason: string) => Promise<void>) | undefined;
  // `keyferryd | head` closing our stdout is a reason to shut down cleanly, not to crash
  endQuietlyWhenOutputCloses([process.stdout, process.stderr], () =>
    stop ? void stop('stdout closed') : process.exit(0),
  );
  const program = new Command('keyferryd')
    .description('keyferry service: management API, device-link and device gateway')
    .version(packageJson.version, '-V, --version', 'print the version')
    .option(
      '-c, --config <file>',
      'config file (YAML or JSON); default: none, i.e. embedded defaults (env KEYFERRY_CONFIG)',
    )
    .helpOption('-h, --help', 'show this help')
    .addHelpText(
      'after',
      '\nWith no config, keyferryd keeps SQLite under ./data, listens on 127.0.0.1:8080 and makes a demo factory.\nSee docs/configuration.md for every option and environment override.',
    )
    .action(async () => {
      stop = await runService(program.opts<{ config?: string }>().config);
    });
  registerAdmin(program);
  await program.parseAsync(argv);
}

/** Starts the service; answers how to stop it. */
async function runService(configFile: string | undefined): Promise<(reason: string) => Promise<void>> {
  // Handlers first: listen.json appears inside startService, and whoever waits for it may
  // signal at once; a signal during the start stops the service as soon as it is up.
  let stopRequested: string | undefined;
  let stop: (reason: string) => Promise<void> = async (reason) => {
    stopRequested = reason;
  };
  // a worker of several stops when its primary says so (cluster.ts), not on signals
  if (!isClusterWorker()) {
    process.once('SIGTERM', () => void stop('SIGTERM'));
    process.once('SIGINT', () => void stop('SIGINT'));
  }
  let service: Banner & { close(): Promise<void> };
  try {
    const { config, file } = loadConfig({ file: configFile });
    const embeddedDefaults = file === undefined;
    const workers = workerCount(config, embeddedDefaults);
    if (isClusterWorker()) {
      service = await startClusterWorker({ config, embeddedDefaults, onStop: (reason) => void stop(reason) });
    } else if (workers > 1) {
      const primary = await startClusterPrimary({ config, embeddedDefaults, workers });
      service = { ...primary.primary, addresses: primary.addresses, close: () => primary.stop() };
    } else {
      service = await startService({ config, embeddedDefaults });
    }
  } catch (err) {
    fail(err, 'keyferryd cannot start');
  }
  stop = async (reason) => {
    stop = async () => {};
    service.ctx.log.info({ reason }, 'shutting down');
    await service.close();
    process.exit(0);
  };
  if (stopRequested) {
    await stop(stopRequested);
  } else if (!isClusterWorker()) {
    // the primary prints for all its workers
    process.stdout.write(startBanner(service));
  }
  return (reason) => stop(reason);
}

type Banner = Pick<RunningService, 'ctx' | 'demo' | 'addresses'>;

/**
 * What keyferryd prints once it serves: where the demo factory's token is kept (never the
 * token itself: a console or journal is read by more people than the 0600 file) and the
 * command that uses it, then the addresses bound.
 */
function startBanner(service: Banner): string {
  const { config } = service.ctx;
  const lines: string[] = [];
  const tokenFile = join(config.dataDir, `${config.demoFactory.name}.token`);
  const tokenKept = service.demo !== undefined || (config.demoFactory.enabled && existsSync(tokenFile));
  if (tokenKept) {
    const made = service.demo ? 'created; ' : '';
    lines.push(
      `Demo factory: ${config.demoFactory.name} (${made}its admin token is in ${tokenFile})`,
      `Next: keyferry login --server ${service.addresses.api} --token-file ${tokenFile}`,
    );
  }
  lines.push(`Management API: ${service.addresses.api}`);
  if (service.addresses.deviceLink) lines.push(`Device-link: ${service.addresses.deviceLink}`);
  if (service.addresses.gateway) lines.push(`Device gateway: ${service.addresses.gateway}`);
  return lines.join('\n') + '\n';
}

function fail(err: unknown, what: string): never {
  const message = err instanceof KeyferryError ? err.message : (err as Error).message;
  process.stderr.write(`ERROR: ${what}: ${message}\n`);
  if (process.env.KEYFERRY_DEBUG === '1') process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(2);
}

/**
 * Runs one admin action on the config given with -c (or none): on its database and key custody
 * (withAdminContext), or on its database alone (withAdminDatabase).
 */
async function admin<T>(command: Command, work: (config: Config) => Promise<T>): Promise<T> {
  try {
    const { config } = loadConfig({ file: command.optsWithGlobals<{ config?: string }>().config });
    return await work(config);
  } catch (err) {
    const names: string[] = [];
    for (let c: Command | null = command; c; c = c.parent) names.unshift(c.name());
    fail(err, names.join(' '));
  }
}

function tokenTable(tokens: readonly TokenInfo[]): string {
  const rows = [
    ['ID', 'SCOPES', 'CREATED', 'STATE', 'DESCRIPTION'],
    ...tokens.map((t) => [
      t.id,
      t.scopes.join(','),
      t.createdAt,
      t.revokedAt ? `revoked ${t.revokedAt}` : t.expiresAt ? `expires ${t.expiresAt}` : 'never expires',
      t.description,
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map(
      (r) =>
        r
          .map((c, i) => c.padEnd(widths[i]! + 2))
          .join('')
          .trimEnd() + '\n',
    )
    .join('');
}

function registerAdmin(program: Command): void {
  const adminCmd = program
    .command('admin')
    .description('administer factories and API tokens directly on the database the config names');
  adminCmd
    .command('backup <file>')
    .description(
      'copy the SQLite database consistently while keyferryd runs (not the master key: keep that apart)',
    )
    .action(async (file: string, _opts, command: Command) => {
      await admin(command, (config) => withAdminDatabase(config, (database) => adminBackup(database, file)));
      process.stdout.write(`Backed up the database to ${file}\n`);
      process.stderr.write('The master key is not in it: back it up apart, once (docs/deployment.md).\n');
    });
  const factory = adminCmd.command('factory').description('factories');
  factory
    .command('create <name>')
    .description(
      'create a factory (lowercase letters, digits, dashes) with its PKI keys and EdgeLock 2GO setup',
    )
    .action(async (name: string, _opts, command: Command) => {
      const created = await admin(command, (config) =>
        withAdminContext(config, (ctx) => adminCreateFactory(ctx, name)),
      );
      process.stdout.write(`Created factory ${created.name} (repo id ${created.repoId})\n`);
      process.stderr.write(
        `Next: keyferryd admin token create --factory ${created.name} --scope write > ${created.name}.token\n`,
      );
    });
  const token = adminCmd.command('token').description('API tokens of a factory');
  token
    .command('create')
    .description('create a token: its secret is printed once on stdout, never logged or stored')
    .requiredOption('--factory <name>', 'the factory the token works for')
    .addOption(
      new Option('--scope <scope>', 'read (look) or write (look and change)')
        .choices(['read', 'write'])
        .makeOptionMandatory(),
    )
    .option('--expires <duration>', 'lifetime, e.g. 30d, 12h, 1y (default: never expires)')
    .option('--description <text>', 'what the token is for', 'created with keyferryd admin')
    .action(
      async (
        opts: { factory: string; scope: string; expires?: string; description: string },
        command: Command,
      ) => {
        // the secret is written before the database closes: a failed write revokes the token
        const created = await admin(command, (config) =>
          withAdminDatabase(config, (database) =>
            adminCreateToken(
              database,
              {
                factory: opts.factory,
                scopes: scopesOfFlag(opts.scope),
                expires: opts.expires,
                description: opts.description,
              },
              (secret) => writeChecked(process.stdout, `${secret}\n`),
            ),
          ),
        );
        process.stderr.write(
          `Token ${created.info.id} for factory ${created.factory.name}, scopes ${created.info.scopes.join(' ')}, ` +
            `${created.info.expiresAt ? `expires ${created.info.expiresAt}` : 'never expires'}. ` +
            'Shown once: keep it in a file (keyferry --token-file FILE) or KEYFERRY_TOKEN.\n',
        );
      },
    );
  token
    .command('list')
    .description('list the tokens of a factory (never their secrets)')
    .requiredOption('--factory <name>', 'the factory')
    .action(async (opts: { factory: string }, command: Command) => {
      const tokens = await admin(command, (config) =>
        withAdminDatabase(config, (database) => adminListTokens(database, opts.factory)),
      );
      process.stdout.write(tokenTable(tokens));
    });
  token
    .command('revoke <id>')
    .description('revoke a token: it is refused from its next request on')
    .requiredOption('--factory <name>', 'the factory')
    .action(async (id: string, opts: { factory: string }, command: Command) => {
      const info = await admin(command, (config) =>
        withAdminDatabase(config, (database) => adminRevokeToken(database, opts.factory, id)),
      );
      process.stdout.write(`Revoked token ${info.id} at ${info.revokedAt}\n`);
    });
}

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { endQuietlyWhenOutputCloses, KeyferryError } from '@keyferry/core';
import { Command } from 'commander';
import packageJson from '../package.json' with { type: 'json' };
import { loadConfig } from './config/load.ts';
import { type RunningService, startService } from './service.ts';

/** keyferryd: one process, several listeners. Exits non-zero with one clear line on a bad start. */
export async function main(argv: string[]): Promise<void> {
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
    );
  program.parse(argv);
  const opts = program.opts<{ config?: string }>();
  let service: RunningService;
  try {
    const { config, file } = loadConfig({ file: opts.config });
    service = await startService({ config, embeddedDefaults: file === undefined });
  } catch (err) {
    const message = err instanceof KeyferryError ? err.message : (err as Error).message;
    process.stderr.write(`ERROR: keyferryd cannot start: ${message}\n`);
    if (process.env.KEYFERRY_DEBUG === '1') process.stderr.write(`${(err as Error).stack}\n`);
    process.exit(2);
  }
  // before anything is printed: whoever waits for the printed addresses may signal at once
  stop = async (reason: string) => {
    stop = async () => {};
    service.ctx.log.info({ reason }, 'shutting down');
    await service.close();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop?.('SIGTERM'));
  process.once('SIGINT', () => void stop?.('SIGINT'));
  process.stdout.write(startBanner(service));
}

/**
 * What keyferryd prints once it serves: the demo factory's token on the first start only
 * (shown once), on every start where it is kept and the command that uses it, then the
 * addresses bound.
 */
function startBanner(service: RunningService): string {
  const { config } = service.ctx;
  const lines: string[] = [];
  const tokenFile = join(config.dataDir, `${config.demoFactory.name}.token`);
  const tokenKept = service.demo !== undefined || (config.demoFactory.enabled && existsSync(tokenFile));
  if (service.demo) {
    lines.push(
      `Demo factory: ${service.demo.factory}`,
      `Admin token: ${service.demo.token}`,
      `(shown once; also saved in ${tokenFile})`,
    );
  } else if (tokenKept) {
    lines.push(`Demo factory: ${config.demoFactory.name}; its admin token is in ${tokenFile}`);
  }
  if (tokenKept)
    lines.push(`Next: keyferry login --server ${service.addresses.api} -t "$(cat ${tokenFile})"`);
  lines.push(`Management API: ${service.addresses.api}`);
  if (service.addresses.deviceLink) lines.push(`Device-link: ${service.addresses.deviceLink}`);
  if (service.addresses.gateway) lines.push(`Device gateway: ${service.addresses.gateway}`);
  return lines.join('\n') + '\n';
}

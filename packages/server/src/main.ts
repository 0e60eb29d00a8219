import { KeyferryError } from '@keyferry/core';
import { Command } from 'commander';
import { loadConfig } from './config/load.ts';
import { startService } from './service.ts';

/** Clears group and other bits of every file and directory keyferryd creates. */
export const PRIVATE_UMASK = 0o077;

/** keyferryd: one process, several listeners. Exits non-zero with one clear line on a bad start. */
export async function main(argv: string[]): Promise<void> {
  // Before any file exists: the database, its WAL, tokens and keys are the operator's alone,
  // whatever umask the shell or unit gave (files 0600, directories 0700).
  process.umask(PRIVATE_UMASK);
  const program = new Command('keyferryd')
    .description('keyferry service: management API, device-link and device gateway')
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
  let service: Awaited<ReturnType<typeof startService>>;
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
  const stop = async (signal: string) => {
    service.ctx.log.info({ signal }, 'shutting down');
    await service.close();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
  if (service.demo) {
    process.stdout.write(
      `Demo factory: ${service.demo.factory}\nAdmin token: ${service.demo.token}\n` +
        `(shown once; also saved in ${service.ctx.config.dataDir}/${service.demo.factory}.token)\n`,
    );
  }
  process.stdout.write(`Management API: ${service.addresses.api}\n`);
  if (service.addresses.deviceLink) process.stdout.write(`Device-link: ${service.addresses.deviceLink}\n`);
  if (service.addresses.gateway) process.stdout.write(`Device gateway: ${service.addresses.gateway}\n`);
}

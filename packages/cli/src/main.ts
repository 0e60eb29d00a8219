import { endQuietlyWhenOutputCloses } from '@keyferry/core';
import { Command, CommanderError } from 'commander';
import packageJson from '../package.json' with { type: 'json' };
import { CliError } from './cli-error.ts';
import { registerDevices } from './commands/devices.ts';
import { registerEl2g } from './commands/el2g.ts';
import { registerFactories } from './commands/factories.ts';
import { registerKeys } from './commands/keys-ca.ts';
import { registerLogin } from './commands/login.ts';
import { registerTokens } from './commands/tokens.ts';
import { usageError } from './usage.ts';

export function buildProgram(): Command {
  const program = new Command('keyferry')
    .description('keyferry operator CLI (fioctl-compatible el2g and keys commands)')
    .option(
      '--server <url>',
      'keyferryd management API (env KEYFERRY_SERVER; default http://127.0.0.1:8080); use https:// off this machine (http:// sends the token unencrypted: warned)',
    )
    .option('-f, --factory <name>', 'factory name (env KEYFERRY_FACTORY)')
    .option(
      '-t, --token <token>',
      'API token (env KEYFERRY_TOKEN); prefer --token-file, a command line is visible to others',
    )
    .option('--token-file <file>', 'read the API token from this file (env KEYFERRY_TOKEN_FILE)')
    .option('--server-ca <file>', 'CA certificate(s) that verify an HTTPS keyferryd (env KEYFERRY_SERVER_CA)')
    .option(
      '--client-cert <file>',
      'client certificate for a keyferryd that wants mutual TLS (env KEYFERRY_CLIENT_CERT)',
    )
    .option('--client-key <file>', 'its private key (env KEYFERRY_CLIENT_KEY)')
    .option('--json', 'print machine-readable JSON')
    .version(packageJson.version, '-V, --version', 'print the version')
    .showHelpAfterError(false)
    .configureOutput({
      outputError: (text, write) => write(usageError(text)),
    })
    .exitOverride();
  registerLogin(program);
  registerFactories(program);
  registerTokens(program);
  registerKeys(program);
  registerEl2g(program);
  registerDevices(program);
  return program;
}

/** Runs the CLI; failures become one `ERROR:` line and a non-zero exit, never a stack trace. */
export async function main(argv: string[]): Promise<number> {
  endQuietlyWhenOutputCloses([process.stdout, process.stderr], () => process.exit(0));
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version'
        ? 0
        : 2;
    }
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`ERROR: ${message}\n`);
    if (process.env.KEYFERRY_DEBUG === '1' && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return err instanceof CliError ? err.exitCode : 1;
  }
}

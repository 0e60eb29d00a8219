import { basename } from 'node:path';
// the subpath, not the package index: --help must not load the X.509 code (start-up time)
import { endQuietlyWhenOutputCloses } from '@keyferry/core/closed-output';
import { Command, CommanderError } from 'commander';
import packageJson from '../package.json' with { type: 'json' };
import { AgentError, EXIT_CODES } from './agent-error.ts';
import { registerAutoRegister } from './commands/auto-register.ts';
import { registerAwsDemo } from './commands/aws-demo.ts';
import { registerRenew } from './commands/renew.ts';
import { registerUid } from './commands/uid.ts';

export function buildProgram(): Command {
  const program = new Command('keyferry-agent')
    .description(
      'keyferry device agent: secure element UID, boot-time credential provisioning, certificate renewal, AWS IoT demo',
    )
    .version(packageJson.version, '-V, --version', 'print the version')
    .showHelpAfterError(false)
    .configureOutput({ outputError: (text, write) => write(`ERROR: ${text.replace(/^error: /, '')}`) })
    .exitOverride();
  registerUid(program);
  registerAutoRegister(program);
  registerRenew(program);
  registerAwsDemo(program);
  return program;
}

/**
 * The name LmP's unit runs (`ExecStart=/usr/bin/lmp-el2go-auto-register`, no arguments). An
 * image that links that name to the agent keeps LmP's unit unchanged: under it the agent is
 * `auto-register`.
 */
export const LMP_COMMAND_NAME = 'lmp-el2go-auto-register';

/** The command line, with `auto-register` put in when the agent runs under LmP's name. */
export function commandLine(argv: readonly string[]): string[] {
  const [node = '', script = '', ...rest] = argv;
  return basename(script) === LMP_COMMAND_NAME ? [node, script, 'auto-register', ...rest] : [...argv];
}

/** The commands that change the device or the service, not only print. */
const WORKING_COMMANDS = new Set(['auto-register', 'renew', 'daemon', 'aws-demo']);

/** Runs the agent; a failure is one `ERROR:` line on stderr and the exit code of its kind. */
export async function main(argv: string[]): Promise<number> {
  // A reader that stops early (`uid | head`) has what it wanted: the end, with success. A command
  // that provisions carries on without its log instead: ended with success, nothing was done.
  const working = commandLine(argv)
    .slice(2)
    .some((arg) => WORKING_COMMANDS.has(arg));
  endQuietlyWhenOutputCloses([process.stdout, process.stderr], working ? () => {} : () => process.exit(0));
  try {
    await buildProgram().parseAsync(commandLine(argv));
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      const ok =
        error.exitCode === 0 ||
        error.code === 'commander.helpDisplayed' ||
        error.code === 'commander.version';
      return ok ? 0 : EXIT_CODES.usage;
    }
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`ERROR: ${message}\n`);
    if (process.env.KEYFERRY_DEBUG === '1' && error instanceof Error)
      process.stderr.write(`${error.stack}\n`);
    return error instanceof AgentError ? error.exitCode : EXIT_CODES.internal;
  }
}

import type { Command } from 'commander';
import { CliError } from '../cli-error.ts';
import { apiClientOf, type GlobalOptions, settingsOf } from '../context.ts';
import { printJson, processOutput } from '../output.ts';
import { readSettingsFile, type Settings, writeSettingsFile } from '../settings.ts';

interface FactoryRow {
  name: string;
  'repo-id': string;
}

/**
 * What an earlier login saved, the fallback for what no flag or variable gives. A login file
 * that cannot be read is the one thing login does not refuse: every other command's refusal
 * of it says `keyferry login writes a new one`, so login goes on as if there were none and
 * writes the new one over it.
 */
function savedLogin(): Settings {
  try {
    return readSettingsFile();
  } catch (err) {
    if (err instanceof CliError) return {};
    throw err;
  }
}

export function registerLogin(program: Command): void {
  program
    .command('login')
    .description(
      'check server and token, then save them (and the factory) in KEYFERRY_CONFIG_FILE, else $XDG_CONFIG_HOME/keyferry/config.json, else ~/.config/keyferry/config.json (0600)',
    )
    .action(async (_opts, command: Command) => {
      const opts = command.optsWithGlobals<GlobalOptions>();
      const settings = settingsOf(opts, savedLogin());
      if (!settings.token) {
        throw new CliError(
          'keyferry login needs a token: pass --token-file FILE, -t/--token TOKEN or KEYFERRY_TOKEN',
          2,
        );
      }
      const api = apiClientOf(opts, settings);
      const factories = await api.call<FactoryRow[]>('GET', '/ota/factories/');
      const factory = settings.factory ?? factories[0]?.name;
      if (factory && !factories.some((f) => f.name === factory)) {
        throw new CliError(
          `this token cannot see factory ${factory}; it sees: ${factories.map((f) => f.name).join(', ')}`,
        );
      }
      const file = writeSettingsFile({ server: settings.server, factory, token: settings.token });
      const out = processOutput(opts.json === true);
      if (out.json) printJson(out, { server: settings.server, factory, file });
      else out.write(`Logged in to ${settings.server} as factory ${factory ?? '(none)'}; saved to ${file}\n`);
    });
}

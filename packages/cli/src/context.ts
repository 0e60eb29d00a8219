import type { Command } from 'commander';
import { ApiClient } from './api-client.ts';
import { type Output, processOutput } from './output.ts';
import { resolveSettings } from './settings.ts';

export interface GlobalOptions {
  server?: string;
  factory?: string;
  token?: string;
  json?: boolean;
}

/** What every command gets: the API client and where to print. */
export interface CommandContext {
  api: ApiClient;
  out: Output;
}

export function commandContext(command: Command): CommandContext {
  const opts = command.optsWithGlobals<GlobalOptions>();
  const settings = resolveSettings({ server: opts.server, factory: opts.factory, token: opts.token });
  return { api: new ApiClient(settings), out: processOutput(opts.json === true) };
}

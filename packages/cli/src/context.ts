import type { Command } from 'commander';
import { ApiClient } from './api-client.ts';
import { type Output, processOutput } from './output.ts';
import { resolveSettings, resolveTlsSettings } from './settings.ts';

export interface GlobalOptions {
  server?: string;
  factory?: string;
  token?: string;
  tokenFile?: string;
  serverCa?: string;
  clientCert?: string;
  clientKey?: string;
  json?: boolean;
}

/** The API client of the global options: server, factory, token (flag, file, env, login) and TLS. */
export function apiClientOf(opts: GlobalOptions): ApiClient {
  const settings = resolveSettings({
    server: opts.server,
    factory: opts.factory,
    token: opts.token,
    tokenFile: opts.tokenFile,
  });
  return new ApiClient(settings, resolveTlsSettings(opts));
}

/** What every command gets: the API client and where to print. */
export interface CommandContext {
  api: ApiClient;
  out: Output;
}

export function commandContext(command: Command): CommandContext {
  const opts = command.optsWithGlobals<GlobalOptions>();
  return { api: apiClientOf(opts), out: processOutput(opts.json === true) };
}

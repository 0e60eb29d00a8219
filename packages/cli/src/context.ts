import type { Command } from 'commander';
import { ApiClient } from './api-client.ts';
import { type Output, processOutput } from './output.ts';
import { type ResolvedSettings, resolveSettings, resolveTlsSettings, type Settings } from './settings.ts';

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

/**
 * Server, factory and token of the global options: flag, token file, env, then the login file
 * (`saved`: what the caller read of it, else read here).
 */
export function settingsOf(opts: GlobalOptions, saved?: Settings): ResolvedSettings {
  const flags = { server: opts.server, factory: opts.factory, token: opts.token, tokenFile: opts.tokenFile };
  return resolveSettings(flags, process.env, saved);
}

/** The API client of the global options (settingsOf, unless given) and their TLS. */
export function apiClientOf(opts: GlobalOptions, settings: ResolvedSettings = settingsOf(opts)): ApiClient {
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

import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { CliError } from './cli-error.ts';

/** Where `keyferry login` keeps server, factory and token (0600). */
export function settingsFile(env = process.env): string {
  if (env.KEYFERRY_CONFIG_FILE) return env.KEYFERRY_CONFIG_FILE;
  const base = env.XDG_CONFIG_HOME || join(homedir(), '.config');
  return join(base, 'keyferry', 'config.json');
}

export interface Settings {
  server?: string | undefined;
  factory?: string | undefined;
  token?: string | undefined;
}

export function readSettingsFile(env = process.env): Settings {
  const file = settingsFile(env);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return {};
  }
  try {
    const parsed = JSON.parse(text) as Settings;
    return { server: parsed.server, factory: parsed.factory, token: parsed.token };
  } catch {
    throw new CliError(`${file} is not valid JSON: fix it or run keyferry login again`);
  }
}

export function writeSettingsFile(settings: Settings, env = process.env): string {
  const file = settingsFile(env);
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, JSON.stringify(settings, null, 2) + '\n', { mode: 0o600 });
  chmodSync(file, 0o600);
  return file;
}

/** Flags first, then KEYFERRY_SERVER / KEYFERRY_FACTORY / KEYFERRY_TOKEN, then the login file. */
export function resolveSettings(flags: Settings, env = process.env): Settings {
  const file = readSettingsFile(env);
  return {
    server: flags.server ?? env.KEYFERRY_SERVER ?? file.server ?? 'http://127.0.0.1:8080',
    factory: flags.factory ?? env.KEYFERRY_FACTORY ?? file.factory,
    token: flags.token ?? env.KEYFERRY_TOKEN ?? file.token,
  };
}

import { mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '@keyferry/core';
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

/** The settings of a run, and where its server URL came from, for a refusal to say what to check. */
export interface ResolvedSettings extends Settings {
  serverFrom: string;
}

/**
 * What `keyferry login` saved; no file is no login yet. A file that is there but cannot be read
 * or is not the settings object is refused: ignoring it would send requests to another server
 * or with another token than the user thinks.
 */
export function readSettingsFile(env = process.env): Settings {
  const file = settingsFile(env);
  const refuse = (what: string) =>
    new CliError(`${what}: fix it or remove it (keyferry login writes a new one)`);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return {};
    throw refuse(`cannot read the login file ${file} (${code ?? (err as Error).message})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw refuse(`the login file ${file} is not valid JSON`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw refuse(`the login file ${file} is not a JSON object`);
  }
  const settings = parsed as Record<string, unknown>;
  for (const key of ['server', 'factory', 'token'] as const) {
    const value = settings[key];
    if (value !== undefined && typeof value !== 'string') {
      // its kind only: the value may be a token
      const kind = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
      throw refuse(`the login file ${file} has a ${key} that is not a string (${kind})`);
    }
  }
  return {
    server: settings.server as string | undefined,
    factory: settings.factory as string | undefined,
    token: settings.token as string | undefined,
  };
}

/**
 * Writes the settings (the token among them) to a new file made 0600 beside the old one, then
 * renames it over (writeFileAtomic): an existing file readable by others (0644) never holds
 * the token, not even between a write and a chmod, and a crash leaves the old login or the new.
 * A directory it makes is 0700. A file it cannot write is refused, naming it and the error code.
 */
export function writeSettingsFile(settings: Settings, env = process.env): string {
  const file = settingsFile(env);
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeFileAtomic(file, JSON.stringify(settings, null, 2) + '\n', 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const what =
      code === 'EISDIR'
        ? 'a directory is in its place: remove it'
        : code === 'EEXIST' || code === 'ENOTDIR'
          ? 'part of its path is a file, not a directory'
          : 'check that you may write there';
    throw new CliError(
      `cannot write the login file ${file} (${code ?? (err as Error).message}): ${what}, or set KEYFERRY_CONFIG_FILE to another file`,
    );
  }
  return file;
}

/** How the CLI reaches an HTTPS management API: the CA that signed it, and a client certificate for mTLS. */
export interface TlsSettings {
  serverCa?: string | undefined;
  clientCert?: string | undefined;
  clientKey?: string | undefined;
}

/**
 * Reads a secret kept in a file (first line, surrounding white space dropped), so it never
 * sits on a command line where `ps` shows it to every user: the API token (--token-file) and
 * the HSM PIN (--hsm-pin-file).
 */
export function readSecretFile(path: string, what: 'token' | 'PIN'): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new CliError(
      `cannot read the ${what} file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  const secret = text.split(/\r?\n/)[0]?.trim() ?? '';
  if (secret === '')
    throw new CliError(`the ${what} file ${path} is empty: put the ${what} on its first line`);
  return secret;
}

/** An environment variable, where set but empty counts as unset (`KEYFERRY_TOKEN= keyferry …`). */
function fromEnv(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name];
  return value === '' ? undefined : value;
}

/**
 * Flags first, then KEYFERRY_SERVER / KEYFERRY_FACTORY / KEYFERRY_TOKEN (or KEYFERRY_TOKEN_FILE),
 * then the login file (`file`: what readSettingsFile reads, unless the caller read it its own
 * way). An empty variable is as good as unset: it never hides the login file.
 */
export function resolveSettings(
  flags: Settings & { tokenFile?: string | undefined },
  env = process.env,
  file: Settings = readSettingsFile(env),
): ResolvedSettings {
  const tokenFile = flags.tokenFile ?? fromEnv(env, 'KEYFERRY_TOKEN_FILE');
  const fromFile = flags.token === undefined && tokenFile ? readSecretFile(tokenFile, 'token') : undefined;
  const serverFromEnv = fromEnv(env, 'KEYFERRY_SERVER');
  return {
    serverFrom:
      flags.server !== undefined
        ? '--server'
        : serverFromEnv !== undefined
          ? 'KEYFERRY_SERVER'
          : file.server !== undefined
            ? `the login file ${settingsFile(env)} (or run keyferry login)`
            : '--server or KEYFERRY_SERVER',
    server: flags.server ?? serverFromEnv ?? file.server ?? 'http://127.0.0.1:8080',
    factory: flags.factory ?? fromEnv(env, 'KEYFERRY_FACTORY') ?? file.factory,
    token: flags.token ?? fromFile ?? fromEnv(env, 'KEYFERRY_TOKEN') ?? file.token,
  };
}

/** --server-ca / --client-cert / --client-key, else KEYFERRY_SERVER_CA / KEYFERRY_CLIENT_CERT / KEYFERRY_CLIENT_KEY (empty: unset). */
export function resolveTlsSettings(flags: TlsSettings, env = process.env): TlsSettings {
  const tls = {
    serverCa: flags.serverCa ?? fromEnv(env, 'KEYFERRY_SERVER_CA'),
    clientCert: flags.clientCert ?? fromEnv(env, 'KEYFERRY_CLIENT_CERT'),
    clientKey: flags.clientKey ?? fromEnv(env, 'KEYFERRY_CLIENT_KEY'),
  };
  if ((tls.clientCert === undefined) !== (tls.clientKey === undefined)) {
    throw new CliError('--client-cert and --client-key go together: give both (or neither)', 2);
  }
  return tls;
}

import { readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { KeyferryError } from '@keyferry/core';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { type Config, configSchema } from './schema.ts';

export interface LoadedConfig {
  config: Config;
  /** The file it came from, or undefined when keyferryd runs on its embedded defaults. */
  file: string | undefined;
}

/** Environment variables that override the file, each documented in docs/configuration.md. */
export const ENV_OVERRIDES = {
  KEYFERRY_DATA_DIR: ['dataDir'],
  KEYFERRY_DOMAIN: ['domain'],
  KEYFERRY_API_LISTEN: ['api', 'listen'],
  KEYFERRY_DEVICE_LINK_LISTEN: ['deviceLink', 'listen'],
  KEYFERRY_GATEWAY_LISTEN: ['gateway', 'listen'],
  KEYFERRY_LOG_LEVEL: ['log', 'level'],
} as const;

/**
 * Reads the config file named by `--config` or KEYFERRY_CONFIG (YAML or JSON), applies env
 * overrides and validates the result. KEYFERRY_STORAGE_URL=postgres://… selects PostgreSQL.
 */
export function loadConfig(options: { file?: string | undefined; env?: NodeJS.ProcessEnv }): LoadedConfig {
  const env = options.env ?? process.env;
  const file = options.file ?? env.KEYFERRY_CONFIG;
  let raw: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new KeyferryError('config_invalid', `cannot read config file ${file}: ${(err as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = parseYaml(text);
    } catch (err) {
      throw new KeyferryError(
        'config_invalid',
        `config file ${file} is not valid YAML/JSON: ${withoutExcerpt((err as Error).message)}`,
      );
    }
    if (parsed !== null && parsed !== undefined && (typeof parsed !== 'object' || Array.isArray(parsed))) {
      throw new KeyferryError('config_invalid', `config file ${file} must hold a mapping of options`);
    }
    raw = (parsed ?? {}) as Record<string, unknown>;
  }
  // the options the environment set, by path: a refusal of one names the variable, not the file
  const fromEnv = new Map<string, string>();
  for (const [name, path] of Object.entries(ENV_OVERRIDES)) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    setPath(raw, path, value);
    fromEnv.set(path.join('.'), name);
  }
  // a number in the schema: digits become one, anything else is left for it to refuse
  if (env.KEYFERRY_WORKERS) {
    raw.workers = /^[0-9]+$/.test(env.KEYFERRY_WORKERS) ? Number(env.KEYFERRY_WORKERS) : env.KEYFERRY_WORKERS;
    fromEnv.set('workers', 'KEYFERRY_WORKERS');
  }
  if (env.KEYFERRY_STORAGE_URL) {
    raw.storage = { kind: 'postgres', url: env.KEYFERRY_STORAGE_URL };
    fromEnv.set('storage', 'KEYFERRY_STORAGE_URL');
  }
  if (env.KEYFERRY_MASTER_KEY_FILE) {
    setMasterKeyFile(raw, env.KEYFERRY_MASTER_KEY_FILE);
    fromEnv.set('keyCustody.masterKeyFile', 'KEYFERRY_MASTER_KEY_FILE');
  }
  const config = validateConfig(raw, file ?? 'the environment', fromEnv);
  if (file) refuseSecretsOthersRead(file, config, fromEnv);
  return { config, file: file ? resolve(file) : undefined };
}

/**
 * Validates `raw` from `source` (a file, or "the environment"); `fromEnv` names the variable that
 * set an option (by its dotted path, or a prefix of it), so its refusal names that variable.
 */
export function validateConfig(
  raw: unknown,
  source = 'config',
  fromEnv: ReadonlyMap<string, string> = new Map(),
): Config {
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const issues = result.error.issues;
    const variables = issues.map((i) => variableOf(i.path, fromEnv));
    // every issue from the environment: the file is not what to fix
    const where = variables.every((v) => v !== undefined) ? 'the environment' : source;
    throw new KeyferryError(
      'config_invalid',
      `invalid configuration in ${where}: ${describeIssues(result.error, fromEnv)}`,
    );
  }
  return result.data;
}

/**
 * A config file that holds a secret (the token PIN, a password in the PostgreSQL URL) must not
 * be readable by every user of the machine, as the master key and keyCustody.pinFile must not.
 * Group read stays allowed: the systemd unit's user reads a root-owned file through its group.
 */
function refuseSecretsOthersRead(file: string, config: Config, fromEnv: ReadonlyMap<string, string>): void {
  const secrets: string[] = [];
  if (config.keyCustody.kind === 'pkcs11' && config.keyCustody.pin !== undefined)
    secrets.push('keyCustody.pin');
  if (config.storage.kind === 'postgres' && !fromEnv.has('storage') && urlHasPassword(config.storage.url))
    secrets.push('a password in storage.url');
  if (secrets.length === 0) return;
  let mode: number;
  try {
    mode = statSync(file).mode & 0o777;
  } catch {
    return; // it was read a moment ago; a file gone since then is not this check's to report
  }
  if ((mode & 0o004) === 0) return;
  const moveTo = [
    secrets.includes('keyCustody.pin') ? 'move the PIN into keyCustody.pinFile' : undefined,
    secrets.includes('a password in storage.url')
      ? 'give the URL in KEYFERRY_STORAGE_URL instead'
      : undefined,
  ].filter((way) => way !== undefined);
  throw new KeyferryError(
    'config_invalid',
    `config file ${file} holds ${secrets.join(' and ')} and every user may read it (mode ${mode.toString(8)}): ` +
      `run chmod o-r ${file} (e.g. chown root:keyferry and chmod 640, so the service's group reads it), or ${moveTo.join(' and ')}`,
  );
}

function urlHasPassword(url: string): boolean {
  try {
    const parsed = new URL(url);
    return parsed.password !== '' || parsed.searchParams.has('password');
  } catch {
    return false;
  }
}

/** The variable that set the option at `path` (or an option around it), if one did. */
function variableOf(path: readonly PropertyKey[], fromEnv: ReadonlyMap<string, string>): string | undefined {
  for (let n = path.length; n > 0; n--) {
    const name = fromEnv.get(path.slice(0, n).join('.'));
    if (name) return name;
  }
  return undefined;
}

function describeIssues(error: z.ZodError, fromEnv: ReadonlyMap<string, string>): string {
  return error.issues
    .map((issue) => {
      const at = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
      if (issue.code === 'unrecognized_keys') {
        const keys = issue.keys.map((k) => (issue.path.length > 0 ? `${at}.${k}` : k));
        return `unknown key${keys.length > 1 ? 's' : ''} ${keys.map((k) => `"${k}"`).join(', ')}`;
      }
      const variable = variableOf(issue.path, fromEnv);
      return `${at}${variable ? ` (from ${variable})` : ''}: ${issue.message}`;
    })
    .join('; ');
}

/**
 * The YAML parser's message without the excerpt of the file it quotes after the position: the
 * line may hold a secret (`pin:`, a postgres URL's password), and the message goes to the log.
 */
function withoutExcerpt(message: string): string {
  const at = message.indexOf(':\n');
  return at === -1 ? message : message.slice(0, at);
}

/**
 * KEYFERRY_MASTER_KEY_FILE (set by keyferryd.service to its systemd credential) names the master
 * key of either custody: soft custody wraps every key with it, pkcs11 the gateway TLS keys.
 */
function setMasterKeyFile(raw: Record<string, unknown>, path: string): void {
  const custody = raw.keyCustody;
  const spec =
    typeof custody === 'object' && custody !== null ? (custody as Record<string, unknown>) : { kind: 'soft' };
  raw.keyCustody = { ...spec, masterKeyFile: path };
}

function setPath(target: Record<string, unknown>, path: readonly string[], value: string): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1] as string] = value;
}

/** Splits `host:port` (IPv6 in brackets) for net.listen. */
export function parseListen(listen: string): { host: string; port: number } {
  const idx = listen.lastIndexOf(':');
  const host = listen.slice(0, idx).replace(/^\[|\]$/g, '');
  return { host, port: Number(listen.slice(idx + 1)) };
}

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AgentError } from '../agent-error.ts';
import { parseEnvFile, readEnvFile } from './env-file.ts';

export const DEFAULT_ENV_FILE = '/etc/default/lmp-el2go-auto-register';

/**
 * Settings fixed when the image is built, below the env file: LmP compiled EL2GO_HOSTNAME
 * into its vendor agent, so an LmP env file does not set it. An image recipe writes this file
 * (`EL2GO_HOSTNAME=${EL2GO_HOSTNAME}`) next to the agent's package.json; it is optional.
 */
export const BUILD_DEFAULTS_FILE = fileURLToPath(new URL('../../build-defaults.env', import.meta.url));

/** Where `LMP_FACTORY_TAG` comes from when no setting gives it, as the LmP script read it. */
export const OS_RELEASE_FILE = '/etc/os-release';

/**
 * GENERIC_KEYPAIRS get PKCS#11 ids 04/05 … 98/99: LmP writes each id as a two-digit decimal
 * number that is then read as hex, so a 49th pair would get a three-digit id.
 */
export const MAX_GENERIC_KEYPAIRS = 48;

/** Every setting, its default and what it is for (README.md has the same table). */
export const DEFAULTS = {
  DAEMON_INTERVAL: '300',
  SE_BACKEND: 'pkcs11',
  PKCS11_MODULE: '/usr/lib/libckteec.so.0',
  PKCS11_PIN: '87654321',
  PKCS11_SOPIN: '12345678',
  PKCS11_TOKEN_LABEL: 'aktualizr',
  GENERIC_KEYPAIRS: '0X83000044',
  SOTA_DIR: '/var/sota',
  ROOT_CRT: '/usr/share/lmp-el2go-auto-register/root.crt',
  AKLITE_START_CMD: 'systemctl start aktualizr-lite',
  LMP_FACTORY_TAG: 'main',
  PACMAN_TYPE: 'ostree+compose_apps',
  PACKAGES_FILE: '/usr/package.manifest',
} as const;

/** A host and port to dial, as EL2GO_CONNECT_ADDR / GATEWAY_CONNECT_ADDR give them. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** The secure element settings: enough for `uid` and the SE port. */
export interface SeSettings {
  readonly backend: 'pkcs11' | 'soft';
  readonly pkcs11Module: string;
  readonly pkcs11Pin: string;
  /** The security officer PIN that initialises the token when it is not initialised yet. */
  readonly pkcs11SoPin: string;
  readonly pkcs11TokenLabel: string;
  /** Soft backend: the directory that is the secure element. */
  readonly seDir: string | undefined;
  /** KEYPAIR object ids that get the generic PKCS#11 ids 04/05, 06/07, … in this order. */
  readonly genericKeypairs: readonly number[];
}

/** Everything `auto-register` reads. */
export interface AgentSettings extends SeSettings {
  readonly envFile: string;
  readonly repoId: string;
  /** `<sub>.device-link.<domain>`: the SNI and the name the server certificate must carry. */
  readonly el2goHostname: string;
  /** The part after `device-link.`, or OTA_LITE_DOMAIN: the gateway is `<repoid>.ota-lite.<domain>`. */
  readonly domain: string;
  readonly el2goConnect: HostPort;
  readonly deviceLinkCa: string | undefined;
  /**
   * Where tools that dial the device gateway connect when its name does not resolve (curl
   * --connect-to). Checked, not used by the agent: aktualizr-lite dials the name in sota.toml.
   */
  readonly gatewayConnect: HostPort | undefined;
  /** Seconds between retries of a transient failure. */
  readonly daemonInterval: number;
  readonly sotaDir: string;
  readonly rootCrt: string;
  readonly akliteStartCmd: string;
  /** `[pacman] tags`: LMP_FACTORY_TAG, else the image's /etc/os-release, else `main`. */
  readonly factoryTag: string;
  /** `[pacman] type` (PACMAN_TYPE). */
  readonly pacmanType: string;
  readonly packagesFile: string;
}

export type Environment = Readonly<Record<string, string | undefined>>;

/** The env file's values with the real environment laid over them. */
export interface SettingSource {
  readonly envFile: string;
  /** False when the env file does not exist (the settings are then the environment's). */
  readonly envFileFound?: boolean;
  get(name: string): string | undefined;
}

/**
 * Reads the env file and lays the real environment over it (a variable set in the
 * environment wins) and both over the image's build-time defaults. The env file may be
 * missing, as the unit's `EnvironmentFile=-…` allows (systemd then passes what it has in the
 * environment), unless `required` or named with --env-file.
 */
export function settingSource(
  envFile: string | undefined,
  env: Environment,
  required: boolean,
  options: { readonly buildDefaults?: string } = {},
): SettingSource {
  const path = envFile ?? DEFAULT_ENV_FILE;
  const file = readEnvFile(path, required || envFile !== undefined);
  const built = readEnvFile(options.buildDefaults ?? BUILD_DEFAULTS_FILE, false, {
    name: "the image's build-time defaults",
    fix: 'make the file readable, or remove it (it is optional)',
  });
  return {
    envFile: path,
    envFileFound: file !== undefined,
    get(name) {
      // an empty variable in the environment is unset there: the file's value counts (REPOID=
      // exported empty hid the file's REPOID=…, and the refusal said to add it to that file)
      const fromEnv = env[name] === '' ? undefined : env[name];
      const value = fromEnv ?? file?.get(name) ?? built?.get(name);
      return value === undefined || value === '' ? undefined : value;
    },
  };
}

function invalid(source: SettingSource, message: string): AgentError {
  const where =
    source.envFileFound === false
      ? `settings from the environment; ${source.envFile} does not exist`
      : `settings from ${source.envFile} and the environment`;
  return new AgentError('setting_invalid', `${message} (${where})`);
}

function value(source: SettingSource, name: keyof typeof DEFAULTS): string {
  return source.get(name) ?? DEFAULTS[name];
}

/** An SE05x object id as LmP reads one (Python's `int(text, 16)`): `0X83000044`, `0x…` or bare hex. */
export function parseObjectId(text: string): number | undefined {
  const match = /^(?:0x)?([0-9a-f]{1,8})$/i.exec(text.trim());
  return match?.[1] === undefined ? undefined : Number.parseInt(match[1], 16);
}

export function seSettings(source: SettingSource): SeSettings {
  const backend = value(source, 'SE_BACKEND');
  if (backend !== 'pkcs11' && backend !== 'soft') {
    throw invalid(source, `SE_BACKEND is ${JSON.stringify(backend)}; use pkcs11 or soft`);
  }
  const seDir = source.get('SE_DIR');
  if (backend === 'soft' && seDir === undefined) {
    throw invalid(
      source,
      'SE_BACKEND=soft needs SE_DIR, the directory that holds the simulated secure element',
    );
  }
  const genericKeypairs = value(source, 'GENERIC_KEYPAIRS')
    .split(/[\s,]+/)
    .filter((part) => part !== '')
    .map((part) => {
      const id = parseObjectId(part);
      if (id === undefined) {
        throw invalid(
          source,
          `GENERIC_KEYPAIRS has ${JSON.stringify(part)}; list object ids like 0x83000044`,
        );
      }
      return id;
    });
  if (genericKeypairs.length > MAX_GENERIC_KEYPAIRS) {
    throw invalid(
      source,
      `GENERIC_KEYPAIRS lists ${genericKeypairs.length} key pairs; at most ${MAX_GENERIC_KEYPAIRS} get PKCS#11 ids (04/05 to 98/99)`,
    );
  }
  return {
    backend,
    pkcs11Module: value(source, 'PKCS11_MODULE'),
    pkcs11Pin: value(source, 'PKCS11_PIN'),
    pkcs11SoPin: value(source, 'PKCS11_SOPIN'),
    pkcs11TokenLabel: value(source, 'PKCS11_TOKEN_LABEL'),
    seDir,
    genericKeypairs,
  };
}

function hostPort(source: SettingSource, name: string, text: string): HostPort {
  const match = /^\[?([^\]\s]+?)\]?:(\d{1,5})$/.exec(text);
  const port = Number(match?.[2]);
  if (!match?.[1] || !(port > 0 && port < 65536)) {
    throw invalid(source, `${name} is ${JSON.stringify(text)}; write host:port, e.g. 127.0.0.1:9443`);
  }
  return { host: match[1], port };
}

/**
 * `LMP_FACTORY_TAG` in an os-release file (a systemd-style env file), or undefined when the
 * file or the variable is not there: images that are not LmP's have neither.
 */
export function osReleaseFactoryTag(path: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  const tag = parseEnvFile(text).get('LMP_FACTORY_TAG');
  return tag === '' ? undefined : tag;
}

/** The settings of `auto-register`; REPOID and EL2GO_HOSTNAME are required. */
export function agentSettings(
  source: SettingSource,
  options: { readonly osRelease?: string } = {},
): AgentSettings {
  const repoId = source.get('REPOID');
  if (repoId === undefined) {
    throw invalid(
      source,
      `REPOID is not set; add REPOID=<repo id from 'keyferry factories'> to ${source.envFile}`,
    );
  }
  if (!/^[A-Za-z0-9-]{1,63}$/.test(repoId)) {
    throw invalid(
      source,
      `REPOID ${JSON.stringify(repoId)} is not a DNS label; copy it from 'keyferry factories'`,
    );
  }
  const el2goHostname = source.get('EL2GO_HOSTNAME');
  if (el2goHostname === undefined) {
    throw invalid(source, "EL2GO_HOSTNAME is not set; use the subdomain 'keyferry el2g status' prints");
  }
  const domain =
    source.get('OTA_LITE_DOMAIN') ?? /^[a-z0-9-]+\.device-link\.(.+)$/i.exec(el2goHostname)?.[1] ?? undefined;
  if (domain === undefined) {
    throw invalid(
      source,
      `EL2GO_HOSTNAME ${JSON.stringify(el2goHostname)} is not <sub>.device-link.<domain>; fix it or set OTA_LITE_DOMAIN`,
    );
  }
  const intervalText = value(source, 'DAEMON_INTERVAL');
  const interval = Number(intervalText);
  // whole seconds: 0.001 passed as "above 0", and every retry then came a millisecond apart
  if (!(/^\s*\d+\s*$/.test(intervalText ?? '') && interval >= 1 && interval <= 86_400)) {
    throw invalid(
      source,
      `DAEMON_INTERVAL is ${JSON.stringify(source.get('DAEMON_INTERVAL'))}; give seconds, 1 to 86400`,
    );
  }
  const connect = source.get('EL2GO_CONNECT_ADDR');
  const gateway = source.get('GATEWAY_CONNECT_ADDR');
  return {
    ...seSettings(source),
    envFile: source.envFile,
    repoId,
    el2goHostname,
    domain,
    el2goConnect: connect
      ? hostPort(source, 'EL2GO_CONNECT_ADDR', connect)
      : { host: el2goHostname, port: 443 },
    deviceLinkCa: source.get('DEVICE_LINK_CA'),
    gatewayConnect: gateway ? hostPort(source, 'GATEWAY_CONNECT_ADDR', gateway) : undefined,
    daemonInterval: interval,
    sotaDir: value(source, 'SOTA_DIR'),
    rootCrt: value(source, 'ROOT_CRT'),
    akliteStartCmd: value(source, 'AKLITE_START_CMD'),
    factoryTag:
      source.get('LMP_FACTORY_TAG') ??
      osReleaseFactoryTag(options.osRelease ?? OS_RELEASE_FILE) ??
      DEFAULTS.LMP_FACTORY_TAG,
    pacmanType: value(source, 'PACMAN_TYPE'),
    packagesFile: value(source, 'PACKAGES_FILE'),
  };
}

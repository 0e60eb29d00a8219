import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findSofthsmModule } from '@keyferry/pkcs11';

/**
 * A private SoftHSM2 token store for one test file.
 *
 * SoftHSM reads SOFTHSM2_CONF once, when the module is initialised (C_Initialize), and a
 * process initialises a module once (`@keyferry/pkcs11` caches it). So in a test file:
 *
 * - call `createSofthsmEnv()` (it sets `process.env.SOFTHSM2_CONF`) before the first
 *   `openToken`/`initToken`; vitest runs each test file in its own process (pool 'forks'),
 *   so every file can have its own store;
 * - make further tokens in the same store with distinct labels (`initTestToken(env.conf,
 *   { label: 'other' })`) — tokens made by softhsm2-util after the module was initialised
 *   show up in the next C_GetSlotList;
 * - to switch stores within one process, call `releaseModule(env.module)` first;
 * - child processes (pkcs11-tool, openssl, the agent) get the store through `env.env`.
 */
export interface SofthsmEnv {
  /** The temp dir holding the config and the tokens. */
  readonly dir: string;
  /** Path of the softhsm2.conf; also in process.env.SOFTHSM2_CONF unless asked not to. */
  readonly conf: string;
  /** Path of libsofthsm2.so. */
  readonly module: string;
  /** Environment for child processes: process.env plus SOFTHSM2_CONF. */
  readonly env: NodeJS.ProcessEnv;
  /** Removes the store and restores the previous SOFTHSM2_CONF. */
  cleanup(): void;
}

export function createSofthsmEnv(options: { setProcessEnv?: boolean } = {}): SofthsmEnv {
  const dir = mkdtempSync(join(tmpdir(), 'keyferry-softhsm-'));
  const tokens = join(dir, 'tokens');
  mkdirSync(tokens);
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  const previous = process.env.SOFTHSM2_CONF;
  const setProcessEnv = options.setProcessEnv ?? true;
  if (setProcessEnv) process.env.SOFTHSM2_CONF = conf;
  return {
    dir,
    conf,
    module: findSofthsmModule(),
    env: { ...process.env, SOFTHSM2_CONF: conf },
    cleanup() {
      if (setProcessEnv) {
        if (previous === undefined) delete process.env.SOFTHSM2_CONF;
        else process.env.SOFTHSM2_CONF = previous;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The labels and PINs of a test token; the defaults are the device side's (LmP's defaults). */
export interface TestToken {
  readonly label: string;
  readonly soPin: string;
  readonly userPin: string;
}

/** Initialises a token in the store at `conf` with softhsm2-util, independently of our own code. */
export function initTestToken(conf: string, options: Partial<TestToken> = {}): TestToken {
  const token: TestToken = {
    label: options.label ?? 'aktualizr',
    soPin: options.soPin ?? '12345678',
    userPin: options.userPin ?? '87654321',
  };
  execFileSync(
    'softhsm2-util',
    ['--init-token', '--free', '--label', token.label, '--so-pin', token.soPin, '--pin', token.userPin],
    { env: { ...process.env, SOFTHSM2_CONF: conf }, stdio: 'pipe' },
  );
  return token;
}

import { createHash, timingSafeEqual } from 'node:crypto';
import { resolve } from 'node:path';
import { ckrName, custodyError, reason } from './failures.ts';
import { type Handle, type PKCS11, p11 } from './pkcs11js.ts';

/**
 * One loaded module per path for the whole process. Cryptoki is process-wide state: a second
 * C_Initialize fails, and C_Finalize ends every session of every user of the module, so the
 * module is loaded and initialised once and shared.
 */
const modules = new Map<string, PKCS11>();

/**
 * Where the user of a program sets the module, the token label and the PIN, as its refusals
 * name them: each program says what to fix in its own terms (keyferryd's config file has
 * keyCustody.module, keyCustody.tokenLabel, keyCustody.pin).
 */
export interface TokenSettingNames {
  readonly module: string;
  readonly tokenLabel: string;
  readonly pin: string;
}

/** The agent's variables and the CLI's flags (the simulator and the agent reword the flags away). */
export const DEFAULT_SETTING_NAMES: TokenSettingNames = {
  module: 'PKCS11_MODULE (or --hsm-module)',
  tokenLabel: 'PKCS11_TOKEN_LABEL',
  pin: 'PKCS11_PIN (or --hsm-pin)',
};

/** Loads and initialises the PKCS#11 module at `path`, or returns the one already loaded. */
export function loadModule(path: string, settings: TokenSettingNames = DEFAULT_SETTING_NAMES): PKCS11 {
  const key = resolve(path);
  const cached = modules.get(key);
  if (cached) return cached;
  const lib = new p11.PKCS11();
  try {
    lib.load(key);
  } catch (error) {
    throw custodyError(
      `PKCS#11 module ${key} could not be loaded: ${reason(error)}; ` +
        `set ${settings.module} to the path of the module .so`,
      error,
      { module: key },
    );
  }
  try {
    // OS locking: pkcs11js runs its *Async calls on worker threads.
    lib.C_Initialize({ flags: p11.CKF_OS_LOCKING_OK });
  } catch (error) {
    // Someone else in this process (the OpenSSL engine, another copy of pkcs11js) got there first.
    if (ckrName(error) !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') {
      lib.close();
      throw custodyError(`PKCS#11 module ${key} failed to initialise: ${reason(error)}`, error, {
        module: key,
      });
    }
  }
  modules.set(key, lib);
  return lib;
}

/**
 * Finalizes and unloads a module so that the next {@link openToken} initialises it afresh —
 * for SoftHSM that means re-reading SOFTHSM2_CONF. Every token opened from it stops working.
 */
export function releaseModule(path: string): void {
  const key = resolve(path);
  const lib = modules.get(key);
  if (!lib) return;
  modules.delete(key);
  for (const slot of logins.keys()) if (slot.startsWith(`${key}\0`)) logins.delete(slot);
  try {
    lib.C_Finalize();
  } finally {
    lib.close();
  }
}

/** A slot that holds an initialised token, found by the token's label. */
export interface TokenSlot {
  readonly lib: PKCS11;
  readonly module: string;
  readonly slot: Handle;
}

/** Finds the one initialised token labelled `tokenLabel`; none or several is an error. */
export function findTokenSlot(
  module: string,
  tokenLabel: string,
  settings: TokenSettingNames = DEFAULT_SETTING_NAMES,
): TokenSlot {
  const key = resolve(module);
  const lib = loadModule(key, settings);
  const labels: string[] = [];
  const matches: Handle[] = [];
  for (const slot of lib.C_GetSlotList(true)) {
    const info = lib.C_GetTokenInfo(slot);
    if ((info.flags & p11.CKF_TOKEN_INITIALIZED) === 0) continue;
    const label = info.label.trimEnd();
    labels.push(`'${label}'`);
    if (label === tokenLabel) matches.push(slot);
  }
  const [slot, ...others] = matches;
  if (!slot) {
    const present = labels.length ? `tokens present: ${labels.join(', ')}` : 'no initialised tokens';
    throw custodyError(
      `no token labelled '${tokenLabel}' in PKCS#11 module ${key} (${present}); ` +
        `initialise the token or set ${settings.tokenLabel} to the label of an existing one`,
      undefined,
      { module: key, token: tokenLabel },
    );
  }
  if (others.length > 0) {
    throw custodyError(
      `${matches.length} tokens are labelled '${tokenLabel}' in PKCS#11 module ${key}; ` +
        'give each token a distinct label so keys cannot be taken from the wrong one',
      undefined,
      { module: key, token: tokenLabel },
    );
  }
  return { lib, module: key, slot };
}

/**
 * Login state per token. PKCS#11 logs in the application, not the session: once one session
 * is logged in, C_Login on the next one answers CKR_USER_ALREADY_LOGGED_IN without looking
 * at the PIN. Remembering a digest of the PIN that worked keeps a wrong PIN from riding on
 * an earlier right one. The token logs out by itself when its last session closes.
 */
interface Login {
  readonly pinDigest: Buffer;
  sessions: number;
}

const logins = new Map<string, Login>();

const pinDigest = (pin: string) => createHash('sha256').update(pin, 'utf8').digest();

/** Opens an RW session on the slot and logs the user in; returns the session. */
export function openUserSession(
  slot: TokenSlot,
  tokenLabel: string,
  pin: string,
  settings: TokenSettingNames = DEFAULT_SETTING_NAMES,
): { session: Handle; release(): void } {
  const { lib, module } = slot;
  const loginKey = `${module}\0${slot.slot.toString('hex')}`;
  const session = lib.C_OpenSession(slot.slot, p11.CKF_SERIAL_SESSION | p11.CKF_RW_SESSION);
  try {
    lib.C_Login(session, p11.CKU_USER, pin);
    logins.set(loginKey, { pinDigest: pinDigest(pin), sessions: 0 });
  } catch (error) {
    const ckr = ckrName(error);
    const known = logins.get(loginKey);
    const samePin = known !== undefined && timingSafeEqual(known.pinDigest, pinDigest(pin));
    // Logged in by someone we cannot see (e.g. the OpenSSL engine in this process): the
    // token has checked some PIN already and offers no way to check this one again.
    const loggedInElsewhere = known === undefined && ckr === 'CKR_USER_ALREADY_LOGGED_IN';
    if (!(ckr === 'CKR_USER_ALREADY_LOGGED_IN' && (samePin || loggedInElsewhere))) {
      lib.C_CloseSession(session);
      throw loginError(error, ckr, module, tokenLabel, settings);
    }
    if (loggedInElsewhere) logins.set(loginKey, { pinDigest: pinDigest(pin), sessions: 0 });
  }
  const login = logins.get(loginKey)!;
  login.sessions++;
  return {
    session,
    release() {
      login.sessions--;
      if (login.sessions <= 0 && logins.get(loginKey) === login) logins.delete(loginKey);
      try {
        lib.C_CloseSession(session);
      } catch {
        // Already gone with a finalized module or a removed token: nothing left to close.
      }
    },
  };
}

function loginError(
  error: unknown,
  ckr: string | undefined,
  module: string,
  tokenLabel: string,
  settings: TokenSettingNames,
): Error {
  const detail = { module, token: tokenLabel };
  if (ckr === 'CKR_PIN_INCORRECT' || ckr === 'CKR_PIN_LEN_RANGE' || ckr === 'CKR_USER_ALREADY_LOGGED_IN') {
    return custodyError(
      `wrong PIN for token '${tokenLabel}' in PKCS#11 module ${module}; ` +
        `check ${settings.pin} — repeated failures can lock the token`,
      error,
      detail,
    );
  }
  if (ckr === 'CKR_PIN_LOCKED') {
    return custodyError(
      `the user PIN of token '${tokenLabel}' is locked; have the security officer set a new one (C_InitPIN)`,
      error,
      detail,
    );
  }
  if (ckr === 'CKR_USER_PIN_NOT_INITIALIZED') {
    return custodyError(
      `token '${tokenLabel}' has no user PIN yet; initialise it (C_InitPIN with the SO PIN)`,
      error,
      detail,
    );
  }
  return custodyError(`could not log in to token '${tokenLabel}': ${reason(error)}`, error, detail);
}

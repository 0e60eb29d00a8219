import { createHash, randomBytes } from 'node:crypto';
import { ecdsaRawToDer, isKeyferryError, KeyferryError } from '@keyferry/core';
import {
  isSessionLost,
  openToken,
  type Token,
  type TokenKey,
  type TokenSettingNames,
} from '@keyferry/pkcs11';
import type { Db } from '../storage/database.ts';
import type { CustodyKeysTable } from '../storage/tables.ts';
import type { CustodyKey, CustodySigner, KeyCustody } from './custody.ts';

/**
 * Where keyferryd's operator sets what the token refusals tell them to fix: the PIN's setting is
 * the one the config uses (`keyCustody.pin`, or `the PIN in keyCustody.pinFile <file>`).
 */
function keyCustodySettings(pinSetting: string): TokenSettingNames {
  return { module: 'keyCustody.module', tokenLabel: 'keyCustody.tokenLabel', pin: pinSetting };
}

/**
 * Refusals of a login with the configured PIN. Offering the same PIN again can only count
 * towards locking the token, so after one of these keyferryd stops logging in.
 */
const PIN_REFUSALS = new Set([
  'CKR_PIN_INCORRECT',
  'CKR_PIN_LEN_RANGE',
  'CKR_PIN_LOCKED',
  'CKR_PIN_EXPIRED',
  'CKR_USER_PIN_NOT_INITIALIZED',
  'CKR_USER_ALREADY_LOGGED_IN',
]);

interface TokenSpec {
  readonly module: string;
  readonly tokenLabel: string;
  readonly pin: string;
  /** The setting the PIN came from, for refusals; default `keyCustody.pin`. */
  readonly pinSetting?: string;
  /** Where a lost session, and the new one or the failure to open it, are logged. */
  readonly log?: CustodyLog;
}

/** The part of keyferryd's logger (pino) the custody writes to. */
export interface CustodyLog {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}

/**
 * Keys generated on a PKCS#11 token (an HSM in production, SoftHSM2 in tests) as sensitive,
 * non-extractable objects. The database keeps only the object label; the token signs.
 *
 * keyferryd runs for months on one session, which an HSM can drop (restart, network, a
 * removed token). A call that finds its session lost opens a new one, logs in with the
 * configured PIN, finds its key again and is retried once. Token calls are synchronous, so
 * no other operation runs while that happens: the signatures that met the lost session at
 * the same time find the new one open and do not open (and log in) again.
 */
export class Pkcs11Custody implements KeyCustody {
  readonly backend = 'pkcs11' as const;
  readonly #spec: TokenSpec;
  /** The open session; undefined once it was lost and opening a new one failed. */
  #token: Token | undefined;
  /** What lost the last session, for the refusals while no new one opens. */
  #lost: KeyferryError | undefined;
  /** A failure to open a new session was logged since the session was lost (logged once). */
  #reopenFailureLogged = false;
  /** The token refused the configured PIN when logging in again: never offered again. */
  #pinRefused: KeyferryError | undefined;
  #closed = false;
  /** Keys found through a session, by label; a new session finds them again. */
  readonly #keys = new Map<string, { readonly token: Token; readonly key: TokenKey }>();
  /** The signers handed out, by key id. They outlive sessions: each signature uses the open one. */
  readonly #signers = new Map<string, CustodySigner>();

  private constructor(spec: TokenSpec) {
    this.#spec = spec;
    this.#token = this.#openToken();
  }

  static async open(spec: TokenSpec): Promise<Pkcs11Custody> {
    return new Pkcs11Custody(spec);
  }

  /** A new logged-in session, its refusals naming the settings the config uses. */
  #openToken(): Token {
    const { module, tokenLabel, pin, pinSetting = 'keyCustody.pin' } = this.#spec;
    return openToken({ module, tokenLabel, pin, settings: keyCustodySettings(pinSetting) });
  }

  async generate(purpose: string): Promise<CustodyKey> {
    const idBytes = randomBytes(12);
    const id = `key_${idBytes.toString('hex')}`;
    const { publicKeySpki } = this.#use((token) => token.generateEcKeyPair({ label: id, id: idBytes }));
    return { id, backend: 'pkcs11', purpose, publicKeySpki: new Uint8Array(publicKeySpki), material: id };
  }

  /** Destroys the key pair `generate` put on the token (its label is the key's id). */
  async discard(key: CustodyKey): Promise<void> {
    if (key.backend !== 'pkcs11') return;
    this.#keys.delete(key.material);
    this.#signers.delete(key.id);
    this.#use((token) => token.deleteObjects({ label: key.material }));
  }

  async signer(row: CustodyKeysTable): Promise<CustodySigner> {
    const cached = this.#signers.get(row.id);
    if (cached) return cached;
    if (row.backend !== 'pkcs11') {
      throw new KeyferryError(
        'key_custody_error',
        `key ${row.id} is held by the ${row.backend} backend, not pkcs11`,
      );
    }
    const label = row.material;
    const publicKeySpki = this.#use((token) => token.publicKeySpki(this.#key(token, label)));
    const signer: CustodySigner = {
      publicKeySpki,
      sign: async (data) => {
        const digest = createHash('sha256').update(data).digest();
        return ecdsaRawToDer(this.#use((token) => token.signDigest(this.#key(token, label), digest)));
      },
    };
    this.#signers.set(row.id, signer);
    return signer;
  }

  /**
   * Asks the token itself (/readyz calls this): the session must be open and logged in and a
   * stored key findable. A lost session is opened again first, as a signature would.
   */
  async verifyAccess(db: Db): Promise<void> {
    const row = await db
      .selectFrom('custody_keys')
      .selectAll()
      .where('backend', '=', 'pkcs11')
      .limit(1)
      .executeTakeFirst();
    this.#use((token) => {
      token.checkSession();
      if (row) this.#find(token, row.material);
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#signers.clear();
    this.#keys.clear();
    this.#token?.close();
    this.#token = undefined;
  }

  /** Runs token calls on the open session; on a lost one, opens a new session and runs them once more. */
  #use<T>(calls: (token: Token) => T): T {
    const token = this.#token ?? this.#reopen();
    try {
      return calls(token);
    } catch (error) {
      if (!isSessionLost(error)) throw error;
      this.#drop(token, error as KeyferryError);
    }
    const fresh = this.#token ?? this.#reopen();
    try {
      return calls(fresh);
    } catch (error) {
      if (!isSessionLost(error)) throw error;
      this.#drop(fresh, error as KeyferryError);
      throw lostAgain(error as KeyferryError);
    }
  }

  /**
   * Forgets a lost session. Its handle is closed before a new session opens: modules (SoftHSM)
   * hand a closed session's number to the next one, which a late close would end.
   */
  #drop(token: Token, lost: KeyferryError): void {
    if (this.#token !== token) return; // another call has dropped it already
    this.#token = undefined;
    this.#lost = lost;
    this.#reopenFailureLogged = false;
    token.close();
    this.#spec.log?.warn(
      { token: this.#spec.tokenLabel, module: this.#spec.module, ckr: lost.detail?.ckr },
      `lost the session with token '${this.#spec.tokenLabel}': opening a new one`,
    );
  }

  #reopen(): Token {
    if (this.#closed) throw new TypeError(`key custody on token '${this.#spec.tokenLabel}' is closed`);
    if (this.#pinRefused) throw this.#reopenFailed(this.#pinRefused);
    try {
      this.#token = this.#openToken();
    } catch (error) {
      const ckr = isKeyferryError(error) ? error.detail?.ckr : undefined;
      if (isKeyferryError(error) && typeof ckr === 'string' && PIN_REFUSALS.has(ckr))
        this.#pinRefused = error;
      const failed = this.#reopenFailed(error);
      // once per loss: every signature meets this until the token is back
      if (!this.#reopenFailureLogged) this.#spec.log?.warn({ token: this.#spec.tokenLabel }, failed.message);
      this.#reopenFailureLogged = true;
      throw failed;
    }
    const lost = this.#lost;
    this.#lost = undefined;
    this.#spec.log?.info(
      { token: this.#spec.tokenLabel, module: this.#spec.module, ckr: lost?.detail?.ckr },
      `opened a new session with token '${this.#spec.tokenLabel}' and logged in again`,
    );
    return this.#token;
  }

  #reopenFailed(cause: unknown): KeyferryError {
    const label = this.#spec.tokenLabel;
    const ckr = this.#lost?.detail?.ckr;
    const what = (cause as Error)?.message ?? String(cause);
    const check = /keyCustody\./.test(what)
      ? ''
      : `; check that the token is present in PKCS#11 module ${this.#spec.module} (keyCustody.module) and reachable`;
    const next =
      cause === this.#pinRefused
        ? '; keyferryd does not offer a refused PIN again (that could lock the token): correct it and restart keyferryd'
        : '; keyferryd tries again on the next use of a key';
    return new KeyferryError(
      'key_custody_error',
      `lost the session with token '${label}'${typeof ckr === 'string' ? ` (${ckr})` : ''} and could not open it again: ${what}${check}${next}`,
      { cause, detail: { token: label, module: this.#spec.module } },
    );
  }

  /** The key labelled `label` through this session, found once per session. */
  #key(token: Token, label: string): TokenKey {
    const known = this.#keys.get(label);
    return known?.token === token ? known.key : this.#find(token, label);
  }

  #find(token: Token, label: string): TokenKey {
    const key = token.findPrivateKey({ label });
    if (!key) {
      // a session that is no longer logged in sees no private key: that is a lost session
      token.checkSession();
      throw new KeyferryError(
        'key_custody_error',
        `key ${label} is not on token ${token.label}: is keyCustody pointing at the token this database was made with?`,
      );
    }
    this.#keys.set(label, { token, key });
    return key;
  }
}

/** A new session lost at once: the token or its connection is failing, not just one session. */
function lostAgain(error: KeyferryError): KeyferryError {
  const { token, action, ckr } = error.detail ?? {};
  return new KeyferryError(
    'key_custody_error',
    `lost the session with token '${String(token)}' (${String(ckr)}) again right after opening it anew, while trying to ${String(action)}; check the token and the HSM's connection (keyCustody.module)`,
    { cause: error, detail: { ...error.detail } },
  );
}

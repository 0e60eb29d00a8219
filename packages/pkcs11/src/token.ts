import { createHash } from 'node:crypto';
import { ecdsaRawToDer, isKeyferryError, type Signer } from '@keyferry/core';
import { P256_EC_PARAMS, p256SpkiFromEcPoint } from './ec-public-key.ts';
import { custodyError, reason } from './failures.ts';
import { findTokenSlot, openUserSession, type TokenSettingNames } from './module.ts';
import * as objects from './objects.ts';
import { type Handle, p11 } from './pkcs11js.ts';
import { describeSelector, type ObjectSelector, selectorTemplate, TokenSession } from './session.ts';

/** Where the token is and how to log in to it. */
export interface OpenTokenOptions {
  /** Path of the PKCS#11 module (.so). */
  readonly module: string;
  readonly tokenLabel: string;
  /** The user PIN. */
  readonly pin: string;
  /**
   * The names of the caller's settings for the module, label and PIN, which refusals tell the
   * user to fix. Default: the agent's variables and the CLI's flags (`PKCS11_PIN (or --hsm-pin)`).
   */
  readonly settings?: TokenSettingNames;
}

/** CKS_RO_USER_FUNCTIONS and CKS_RW_USER_FUNCTIONS (pkcs11js does not export the CKS_ values). */
const USER_SESSION_STATES = new Set([1, 3]);

/** A private key found on (or generated in) a token. Valid only with the token that returned it. */
export class TokenKey {
  /** @internal */
  constructor(
    readonly label: string | undefined,
    readonly id: Buffer,
    /** @internal The PKCS#11 object handle. */
    readonly handle: Handle,
    /** @internal */
    readonly session: TokenSession,
  ) {}
}

/** A private key, by handle or by the label and/or id it was stored under. */
export type KeyRef = TokenKey | ObjectSelector;

/** The protection attributes of a private key, as the token reports them. */
export interface KeyAttributes {
  readonly sensitive: boolean | undefined;
  readonly extractable: boolean | undefined;
  readonly alwaysSensitive: boolean | undefined;
  readonly neverExtractable: boolean | undefined;
  readonly private: boolean | undefined;
  readonly token: boolean | undefined;
  readonly sign: boolean | undefined;
}

/**
 * Opens the token labelled `tokenLabel` in `module`: loads and initialises the module once
 * per process, opens a read-write session and logs the user in. Close it when done.
 */
export function openToken(options: OpenTokenOptions): Token {
  try {
    const slot = findTokenSlot(options.module, options.tokenLabel, options.settings);
    const { session, release } = openUserSession(slot, options.tokenLabel, options.pin, options.settings);
    return new Token(slot.module, new TokenSession(slot.lib, session, options.tokenLabel, release));
  } catch (error) {
    if (isKeyferryError(error) || error instanceof TypeError) throw error;
    throw custodyError(
      `could not open token '${options.tokenLabel}' in PKCS#11 module ${options.module}: ${reason(error)}`,
      error,
      { module: options.module, token: options.tokenLabel },
    );
  }
}

/** A logged-in session on one token. Its methods are synchronous: each is one or a few PKCS#11 calls. */
export class Token {
  /** @internal Use {@link openToken}. */
  constructor(
    /** Absolute path of the module the token was opened through. */
    readonly module: string,
    private readonly session: TokenSession,
  ) {}

  get label(): string {
    return this.session.tokenLabel;
  }

  /** Ends the session. The token logs out by itself once its last session in this process closes. */
  close(): void {
    this.session.close();
  }

  /**
   * Asks the token whether the session is still open and logged in (C_GetSessionInfo), for a
   * health check: throws the lost-session error a signature would meet, without signing.
   */
  checkSession(): void {
    this.session.run('check the session', () => {
      const { state } = this.session.lib.C_GetSessionInfo(this.session.handle);
      if (!USER_SESSION_STATES.has(state)) {
        throw new Error(
          `CKR_USER_NOT_LOGGED_IN: the session is in state ${state}, not logged in as the user`,
        );
      }
    });
  }

  /**
   * Generates a P-256 key pair inside the token: the private key is sensitive, never
   * extractable, persistent and may only sign. Refuses when a private key with the same
   * label or id exists, so a key is never silently shadowed.
   */
  generateEcKeyPair(options: { readonly label: string; readonly id: Uint8Array }): {
    key: TokenKey;
    publicKeySpki: Buffer;
  } {
    const id = Buffer.from(options.id);
    return this.session.run(`generate key pair '${options.label}'`, () => {
      for (const selector of [{ label: options.label }, { id }]) {
        if (this.session.find(selectorTemplate(selector, p11.CKO_PRIVATE_KEY)).length > 0) {
          throw custodyError(
            `token '${this.label}' already has a private key with ${describeSelector(selector)}; ` +
              'use it, or delete it first to replace it',
          );
        }
      }
      const common = [
        { type: p11.CKA_KEY_TYPE, value: p11.CKK_EC },
        { type: p11.CKA_TOKEN, value: true },
        { type: p11.CKA_LABEL, value: options.label },
        { type: p11.CKA_ID, value: id },
      ];
      const pair = this.session.lib.C_GenerateKeyPair(
        this.session.handle,
        { mechanism: p11.CKM_EC_KEY_PAIR_GEN },
        [
          ...common,
          { type: p11.CKA_CLASS, value: p11.CKO_PUBLIC_KEY },
          { type: p11.CKA_PRIVATE, value: false },
          { type: p11.CKA_VERIFY, value: true },
          { type: p11.CKA_EC_PARAMS, value: P256_EC_PARAMS },
        ],
        [
          ...common,
          { type: p11.CKA_CLASS, value: p11.CKO_PRIVATE_KEY },
          { type: p11.CKA_PRIVATE, value: true },
          { type: p11.CKA_SENSITIVE, value: true },
          { type: p11.CKA_EXTRACTABLE, value: false },
          { type: p11.CKA_SIGN, value: true },
          { type: p11.CKA_DECRYPT, value: false },
          { type: p11.CKA_UNWRAP, value: false },
          { type: p11.CKA_DERIVE, value: false },
        ],
      );
      const key = new TokenKey(options.label, id, pair.privateKey, this.session);
      return { key, publicKeySpki: this.spkiOfPublicKey(pair.publicKey) };
    });
  }

  /** The private key with this label and/or id, or undefined when the token has none. */
  findPrivateKey(selector: ObjectSelector): TokenKey | undefined {
    return this.session.run(`find private key with ${describeSelector(selector)}`, () => {
      const handle = objects.findOne(this.session, p11.CKO_PRIVATE_KEY, selector);
      if (handle === undefined) return undefined;
      const label = this.session.attribute(handle, p11.CKA_LABEL)?.toString('utf8');
      return new TokenKey(
        label,
        this.session.attribute(handle, p11.CKA_ID) ?? Buffer.alloc(0),
        handle,
        this.session,
      );
    });
  }

  /**
   * DER SubjectPublicKeyInfo of a private key, read from the public key object that shares
   * its CKA_ID (its label when it has no id): PKCS#11 keeps the point only there.
   */
  publicKeySpki(ref: KeyRef): Buffer {
    const key = this.resolveKey(ref);
    return this.session.run(`read the public key of ${describeKey(key)}`, () => {
      const selector = key.id.length > 0 ? { id: key.id } : { label: key.label ?? '' };
      const publicKey = objects.findOne(this.session, p11.CKO_PUBLIC_KEY, selector);
      if (publicKey === undefined) {
        throw custodyError(
          `token '${this.label}' has no public key object with ${describeSelector(selector)} beside the private key; ` +
            'store one (C_CreateObject) or generate the pair again',
        );
      }
      return this.spkiOfPublicKey(publicKey);
    });
  }

  /** Signs a SHA-256 digest with CKM_ECDSA; returns the raw r || s (64 bytes). */
  signDigest(ref: KeyRef, digest: Uint8Array): Buffer {
    if (digest.length !== 32)
      throw new TypeError(`sign a 32-byte SHA-256 digest, not ${digest.length} bytes`);
    const key = this.resolveKey(ref);
    return this.session.run(`sign with ${describeKey(key)}`, () => {
      const { lib, handle } = this.session;
      lib.C_SignInit(handle, { mechanism: p11.CKM_ECDSA }, key.handle);
      return Buffer.from(lib.C_Sign(handle, Buffer.from(digest), Buffer.alloc(132)));
    });
  }

  /**
   * The key as `@keyferry/core`'s Signer, for certificates, CSRs and CRLs. It hashes in Node
   * because SoftHSM 2.6 (and many secure elements) lack CKM_ECDSA_SHA256, signs the digest
   * with CKM_ECDSA and returns DER. The signature is made synchronously; the promise is the
   * Signer contract, which other backends need.
   */
  signer(ref: KeyRef): Signer {
    const key = this.resolveKey(ref);
    const publicKeySpki = this.publicKeySpki(key);
    return {
      publicKeySpki,
      sign: async (data) => ecdsaRawToDer(this.signDigest(key, createHash('sha256').update(data).digest())),
    };
  }

  /** What the token says about a private key's protection (tests check these). */
  keyAttributes(ref: KeyRef): KeyAttributes {
    const key = this.resolveKey(ref);
    return this.session.run(`read the attributes of ${describeKey(key)}`, () => {
      const flag = (type: number) => this.session.boolean(key.handle, type);
      return {
        sensitive: flag(p11.CKA_SENSITIVE),
        extractable: flag(p11.CKA_EXTRACTABLE),
        alwaysSensitive: flag(p11.CKA_ALWAYS_SENSITIVE),
        neverExtractable: flag(p11.CKA_NEVER_EXTRACTABLE),
        private: flag(p11.CKA_PRIVATE),
        token: flag(p11.CKA_TOKEN),
        sign: flag(p11.CKA_SIGN),
      };
    });
  }

  /** Stores an X.509 certificate (CKO_CERTIFICATE, CKC_X_509), replacing one with the same label or id. */
  putCertificate(options: objects.PutCertificateOptions): void {
    this.session.run(`store certificate '${options.label}'`, () =>
      objects.putCertificate(this.session, options),
    );
  }

  /** The DER of the certificate with this label and/or id, or undefined. */
  getCertificate(selector: ObjectSelector): Buffer | undefined {
    return this.session.run(`read certificate with ${describeSelector(selector)}`, () =>
      objects.readValue(this.session, p11.CKO_CERTIFICATE, selector),
    );
  }

  /** Stores a data object (CKO_DATA), replacing one with the same label. */
  putData(options: objects.PutDataOptions): void {
    this.session.run(`store data object '${options.label}'`, () => objects.putData(this.session, options));
  }

  /** The value of the data object with this label, or undefined. */
  getData(selector: { readonly label: string }): Buffer | undefined {
    return this.session.run(`read data object '${selector.label}'`, () =>
      objects.readValue(this.session, p11.CKO_DATA, selector),
    );
  }

  /** Destroys every object (keys, certificates, data) with this label and/or id; returns how many. */
  deleteObjects(selector: ObjectSelector): number {
    return this.session.run(`delete objects with ${describeSelector(selector)}`, () =>
      objects.deleteObjects(this.session, selector),
    );
  }

  /** Every object the logged-in user can see. */
  listObjects(): objects.TokenObjectInfo[] {
    return this.session.run('list objects', () => objects.listObjects(this.session));
  }

  private resolveKey(ref: KeyRef): TokenKey {
    if (ref instanceof TokenKey) {
      if (ref.session !== this.session)
        throw new TypeError('this key belongs to another open token; find it again');
      return ref;
    }
    const key = this.findPrivateKey(ref);
    if (!key) {
      throw custodyError(
        `token '${this.label}' has no private key with ${describeSelector(ref)}; generate or provision it first`,
      );
    }
    return key;
  }

  private spkiOfPublicKey(publicKey: Handle): Buffer {
    const params = this.session.attribute(publicKey, p11.CKA_EC_PARAMS);
    if (!params?.equals(P256_EC_PARAMS)) {
      throw custodyError(
        `a public key on token '${this.label}' is not a P-256 key; keyferry uses P-256 only`,
      );
    }
    const point = this.session.attribute(publicKey, p11.CKA_EC_POINT);
    if (!point) throw custodyError(`a public key on token '${this.label}' has no CKA_EC_POINT`);
    return p256SpkiFromEcPoint(point);
  }
}

function describeKey(key: TokenKey): string {
  return `private key ${describeSelector({ ...(key.label === undefined ? {} : { label: key.label }), id: key.id })}`;
}

import { isKeyferryError } from '@keyferry/core';
import { custodyError, reason } from './failures.ts';
import { loadModule } from './module.ts';
import { type Handle, p11 } from './pkcs11js.ts';

/** What {@link initToken} needs: the module, the new token's label and its two PINs. */
export interface InitTokenOptions {
  readonly module: string;
  readonly label: string;
  readonly soPin: string;
  readonly userPin: string;
  /**
   * Re-initialise the token that already has this label, destroying every object on it (a
   * factory reset). Default false: use the first slot whose token is not initialised yet
   * (SoftHSM always offers one). Tokens are chosen by label, never by slot position:
   * SoftHSM orders its slots by directory listing, which differs between processes.
   */
  readonly reinitialize?: boolean;
}

const LABEL_BYTES = 32;

/**
 * Initialises a token (C_InitToken) and sets its user PIN (C_InitPIN), as a device's first
 * boot or the SE05x simulator does. Unless re-initialising, it refuses a label that an
 * initialised token already has, since {@link openToken} could then not tell them apart.
 */
export function initToken(options: InitTokenOptions): { readonly serialNumber: string } {
  const label = Buffer.from(options.label, 'utf8');
  if (label.length === 0 || label.length > LABEL_BYTES) {
    throw new TypeError(`a token label is 1 to ${LABEL_BYTES} bytes of UTF-8, not ${label.length}`);
  }
  const lib = loadModule(options.module);
  try {
    const slots = lib.C_GetSlotList(true);
    const initialised = (slot: Handle) => (lib.C_GetTokenInfo(slot).flags & p11.CKF_TOKEN_INITIALIZED) !== 0;
    const sameLabel = slots.filter(
      (s) => initialised(s) && lib.C_GetTokenInfo(s).label.trimEnd() === options.label,
    );
    if (options.reinitialize && sameLabel.length !== 1) {
      throw custodyError(
        `cannot re-initialise token '${options.label}' in PKCS#11 module ${options.module}: ` +
          `${sameLabel.length} tokens have that label; there must be exactly one`,
      );
    }
    if (!options.reinitialize && sameLabel.length > 0) {
      throw custodyError(
        `a token labelled '${options.label}' already exists in PKCS#11 module ${options.module}; ` +
          'choose another label, or re-initialise it (which wipes it)',
      );
    }
    const slot = options.reinitialize ? sameLabel[0] : slots.find((s) => !initialised(s));
    if (!slot) {
      throw custodyError(
        `PKCS#11 module ${options.module} has no slot with an uninitialised token; free one or add a token`,
      );
    }
    // pkcs11js hands the string to C_InitToken as it is, but the call reads exactly 32
    // bytes: a shorter label must be blank-padded or the token gets whatever follows it.
    const padded = Buffer.concat([label, Buffer.alloc(LABEL_BYTES - label.length, ' ')]).toString('utf8');
    lib.C_InitToken(slot, options.soPin, padded);
    const session = lib.C_OpenSession(slot, p11.CKF_SERIAL_SESSION | p11.CKF_RW_SESSION);
    try {
      lib.C_Login(session, p11.CKU_SO, options.soPin);
      lib.C_InitPIN(session, options.userPin);
      lib.C_Logout(session);
    } finally {
      lib.C_CloseSession(session);
    }
    return { serialNumber: lib.C_GetTokenInfo(slot).serialNumber.trimEnd() };
  } catch (error) {
    if (isKeyferryError(error)) throw error;
    throw custodyError(
      `could not initialise token '${options.label}' in PKCS#11 module ${options.module}: ${reason(error)}`,
      error,
      { module: options.module, token: options.label },
    );
  }
}

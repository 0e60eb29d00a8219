import { KeyferryError } from '@keyferry/core';

/**
 * The CKR_* name of a failed PKCS#11 call, or undefined for other errors. pkcs11js puts the
 * name in the message (`CKR_PIN_INCORRECT:160`) and not always in a typed error: calls it
 * wraps by hand, such as C_FindObjects, throw plain Errors.
 */
export function ckrName(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  return /\bCKR_[A-Z0-9_]+/.exec(error.message)?.[0];
}

/** A token or module problem. The detail names the module, token and CKR code for the log. */
export function custodyError(
  message: string,
  cause?: unknown,
  detail?: Record<string, unknown>,
): KeyferryError {
  const ckr = ckrName(cause);
  return new KeyferryError('key_custody_error', message, {
    cause,
    detail: { ...detail, ...(ckr === undefined ? {} : { ckr }) },
  });
}

/** What failed, as short as it can be said: the CKR name if there is one, else the message. */
export function reason(error: unknown): string {
  return ckrName(error) ?? (error instanceof Error ? error.message : String(error));
}

/** Answers meaning the session (or the login, the module or the token under it) is gone. */
const SESSION_LOST = new Set([
  'CKR_USER_NOT_LOGGED_IN',
  'CKR_SESSION_HANDLE_INVALID',
  'CKR_SESSION_CLOSED',
  'CKR_CRYPTOKI_NOT_INITIALIZED',
  'CKR_TOKEN_NOT_PRESENT',
  'CKR_DEVICE_REMOVED',
]);

/**
 * Whether a failure of an open token's call means its session is lost: a new session (and
 * login) may work where this one cannot, so a long-running user can open the token again.
 */
export function isSessionLost(error: unknown): boolean {
  if (!(error instanceof KeyferryError)) return false;
  const ckr = error.detail?.ckr;
  return typeof ckr === 'string' && SESSION_LOST.has(ckr) && error.detail?.action !== undefined;
}

/**
 * Turns a failed call on an open token into an error that says what to do. Errors that are
 * already keyferry's (or caller misuse) pass through unchanged.
 */
export function tokenCallError(error: unknown, tokenLabel: string, action: string): Error {
  if (error instanceof KeyferryError || error instanceof TypeError) return error;
  const ckr = ckrName(error);
  const detail = { token: tokenLabel, action };
  switch (ckr) {
    case 'CKR_DEVICE_MEMORY':
      return custodyError(
        `token '${tokenLabel}' is full (CKR_DEVICE_MEMORY) while trying to ${action}; delete objects it no longer needs`,
        error,
        detail,
      );
    default:
      if (ckr !== undefined && SESSION_LOST.has(ckr)) {
        return custodyError(
          `lost the session with token '${tokenLabel}' (${ckr}) while trying to ${action}; open the token again`,
          error,
          detail,
        );
      }
      return custodyError(`token '${tokenLabel}' failed to ${action}: ${reason(error)}`, error, detail);
  }
}

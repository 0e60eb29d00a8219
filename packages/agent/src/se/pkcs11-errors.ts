import { isKeyferryError } from '@keyferry/core';
import { AgentError, type AgentErrorKind } from '../agent-error.ts';

/**
 * Sorts a failure of @keyferry/pkcs11 into the agent's exit codes: a module that does not
 * load, a token label that is not there, a PIN the token refuses and a full token each have
 * their own, so a device log says which setting to fix. The message is the library's, which
 * already names the module, token and setting.
 */
export function seFailure(error: unknown, settingHint?: string): AgentError {
  if (error instanceof AgentError) return error;
  if (!isKeyferryError(error)) {
    return new AgentError(
      'se_error',
      `secure element failure: ${(error as Error)?.message ?? String(error)}`,
      {
        cause: error,
      },
    );
  }
  const ckr = typeof error.detail?.ckr === 'string' ? error.detail.ckr : undefined;
  const message = error.message;
  let kind: AgentErrorKind = 'se_error';
  if (/^PKCS#11 module .* (could not be loaded|failed to initialise)/.test(message)) kind = 'se_module';
  else if (/^no token labelled /.test(message) || /tokens are labelled/.test(message)) kind = 'se_token';
  else if (ckr === 'CKR_DEVICE_MEMORY' || /\bis full\b/.test(message)) kind = 'se_full';
  else if (/^(wrong PIN|the user PIN of token)/.test(message) || ckr === 'CKR_PIN_INCORRECT') kind = 'se_pin';
  const suffix = settingHint && kind === 'se_error' ? ` (${settingHint})` : '';
  return new AgentError(kind, inAgentTerms(kind, message) + suffix, { cause: error });
}

/**
 * What to fix, in the agent's own settings. @keyferry/pkcs11 also serves the operator CLI,
 * so its hints for a module that does not load and a wrong PIN name the CLI's flags too
 * (`--hsm-module`, `--hsm-pin`), which the agent does not have: the agent keeps what failed
 * (the library's text up to its hint) and names its own setting instead.
 */
const AGENT_HINTS: Partial<Record<AgentErrorKind, { readonly library: RegExp; readonly hint: string }>> = {
  se_module: {
    library: /; set PKCS11_MODULE\b[^;]*$/,
    hint: "; set PKCS11_MODULE to the path of the secure element's PKCS#11 module (.so)",
  },
  se_pin: {
    library: /; check PKCS11_PIN\b[^;]*$/,
    hint: '; check PKCS11_PIN (repeated failures can lock the token)',
  },
};

function inAgentTerms(kind: AgentErrorKind, message: string): string {
  const rule = AGENT_HINTS[kind];
  return rule?.library.test(message) ? message.replace(rule.library, rule.hint) : message;
}

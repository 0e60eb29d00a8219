import { initToken } from '@keyferry/pkcs11';
import { AgentError } from '../agent-error.ts';
import type { Log } from '../log.ts';
import type { SeSettings } from '../settings/settings.ts';
import { seFailure } from './pkcs11-errors.ts';
import { Pkcs11SecureElement } from './pkcs11-se.ts';
import type { SecureElement } from './port.ts';
import { SoftSecureElement } from './soft-se.ts';

export interface OpenOptions {
  /**
   * When the module has no initialised token yet, initialise PKCS11_TOKEN_LABEL with
   * PKCS11_SOPIN and set PKCS11_PIN, as lmp-el2go-auto-register did at first boot
   * (auto-register only: `uid` and `aws-demo` never change the token).
   */
  readonly initialiseToken?: boolean;
  readonly log?: Log;
}

/** The secure element the settings name (SE_BACKEND): a PKCS#11 token or a soft directory. */
export function openSecureElement(settings: SeSettings, options: OpenOptions = {}): SecureElement {
  if (settings.backend === 'soft') return new SoftSecureElement(settings.seDir ?? '');
  const open = () =>
    new Pkcs11SecureElement({
      module: settings.pkcs11Module,
      tokenLabel: settings.pkcs11TokenLabel,
      pin: settings.pkcs11Pin,
      genericKeypairs: settings.genericKeypairs,
    });
  if (!options.initialiseToken) return open();
  try {
    return open();
  } catch (error) {
    if (!(error instanceof AgentError) || !isFreshModule(error)) throw error;
    initialise(settings, error);
    options.log?.info(
      `Initialised token '${settings.pkcs11TokenLabel}' in ${settings.pkcs11Module} with PKCS11_SOPIN and PKCS11_PIN (it was not initialised)`,
    );
    return open();
  }
}

/**
 * A first boot: the module has no initialised token at all (OP-TEE's slots before anyone
 * initialised one). When other tokens are there, a missing label is more likely a typo in
 * PKCS11_TOKEN_LABEL than a new device, and making a token under it would hide that.
 */
function isFreshModule(error: AgentError): boolean {
  return /^no token labelled '[^']*' in PKCS#11 module .* \(no initialised tokens\)/.test(error.message);
}

/** C_InitToken on a slot whose token is not initialised yet; never on an initialised one. */
function initialise(settings: SeSettings, absent: AgentError): void {
  try {
    initToken({
      module: settings.pkcs11Module,
      label: settings.pkcs11TokenLabel,
      soPin: settings.pkcs11SoPin,
      userPin: settings.pkcs11Pin,
    });
  } catch (error) {
    const why = seFailure(error).message;
    throw new AgentError(
      'se_token',
      `${absent.message}; initialising it with PKCS11_SOPIN failed too: ${why}`,
      { cause: error },
    );
  }
}

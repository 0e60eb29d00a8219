import type { SeSettings } from '../settings/settings.ts';
import { Pkcs11SecureElement } from './pkcs11-se.ts';
import type { SecureElement } from './port.ts';
import { SoftSecureElement } from './soft-se.ts';

/** The secure element the settings name (SE_BACKEND): a PKCS#11 token or a soft directory. */
export function openSecureElement(settings: SeSettings): SecureElement {
  if (settings.backend === 'soft') return new SoftSecureElement(settings.seDir ?? '');
  return new Pkcs11SecureElement({
    module: settings.pkcs11Module,
    tokenLabel: settings.pkcs11TokenLabel,
    pin: settings.pkcs11Pin,
    genericKeypairs: settings.genericKeypairs,
  });
}

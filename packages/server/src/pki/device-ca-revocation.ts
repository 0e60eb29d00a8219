import {
  fromPem,
  KeyferryError,
  parseCertificate,
  parseCrl,
  serialToDecimal,
  toPem,
  verifyCrlSignature,
} from '@keyferry/core';

/** RFC 5280 reason codes as fioctl uses them on device CAs. */
export const CA_HOLD = 6; // certificateHold: disable (no new devices)
export const CA_RENEW = 8; // removeFromCRL: enable a disabled CA again

/** The device CA lists a revocation CRL acts on. */
export interface DeviceCaState {
  bundle: Uint8Array[];
  disabled: string[];
  revoked: Uint8Array[];
}

/**
 * Applies a `ca-revoke-crl` (fioctl's `keys ca revoke-device-ca` / `disable-device-ca`): the
 * CRL must be signed by the factory root and current, and name only device CAs of ca-crt (or,
 * to renew, disabled ones). Reason 6 disables a CA, 8 enables it again, any other reason
 * revokes it: it leaves ca-crt, so the gateway refuses its devices at once.
 */
export function applyCaRevokeCrl(
  rootPem: string,
  crlPem: string,
  state: DeviceCaState,
  now: Date,
): DeviceCaState & { crlPem: string } {
  let der: Uint8Array;
  try {
    der = fromPem(crlPem, 'X509 CRL');
  } catch (err) {
    throw new KeyferryError('certificate_invalid', `ca-revoke-crl: ${(err as Error).message}`);
  }
  const crl = parseCrl(der);
  const root = parseCertificate(fromPem(rootPem, 'CERTIFICATE'));
  if (!Buffer.from(crl.issuer.der).equals(root.subject.der) || !verifyCrlSignature(crl, root.spki)) {
    throw new KeyferryError(
      'untrusted_chain',
      "ca-revoke-crl is not signed by the factory's root CA: sign it with the root key of the PKI dir (keyferry keys ca revoke-device-ca does)",
    );
  }
  if (crl.nextUpdate !== undefined && crl.nextUpdate.getTime() <= now.getTime()) {
    throw new KeyferryError(
      'certificate_invalid',
      `ca-revoke-crl expired at ${crl.nextUpdate.toISOString()}: make a new one, an old CRL is not replayed`,
    );
  }
  if (crl.entries.length === 0) {
    throw new KeyferryError('invalid_request', 'ca-revoke-crl names no device CA: give at least one serial');
  }
  const serialOf = (ca: Uint8Array) => serialToDecimal(parseCertificate(ca).serialHex);
  const inBundle = new Set(state.bundle.map(serialOf));
  const disabled = new Set(state.disabled);
  const revoked = new Set(state.revoked.map(serialOf));
  for (const entry of crl.entries) {
    const serial = serialToDecimal(entry.serialHex);
    const known = inBundle.has(serial) || (entry.reasonCode === CA_RENEW && disabled.has(serial));
    if (!known) {
      throw new KeyferryError(
        'not_found',
        `ca-revoke-crl names serial ${serial}, which is no device CA in ca-crt: see keyferry keys ca show --just-device-cas`,
      );
    }
    if (entry.reasonCode === CA_HOLD) disabled.add(serial);
    else if (entry.reasonCode === CA_RENEW) disabled.delete(serial);
    else {
      revoked.add(serial);
      disabled.delete(serial);
    }
  }
  return {
    bundle: state.bundle.filter((ca) => !revoked.has(serialOf(ca))),
    disabled: [...disabled],
    revoked: [...state.revoked, ...state.bundle.filter((ca) => revoked.has(serialOf(ca)))].filter(
      (ca, i, all) => all.findIndex((other) => Buffer.from(other).equals(ca)) === i,
    ),
    crlPem: toPem(der, 'X509 CRL'),
  };
}

import type { DeviceId } from '../device-id.ts';
import { KeyferryError } from '../errors.ts';
import type { ExtensionsSpec } from './extensions.ts';
import { issueCertificate, issuerFromCertificate, LEAF_SERIAL_BITS } from './issue.ts';
import type { DnSpec } from './name.ts';
import { isP256Spki } from './public-key.ts';
import { randomSerial } from './serial.ts';
import type { Signer } from './signer.ts';
import { type ValidityPeriod, validityFor } from './validity.ts';

/** Default validity of device certificates (docs/device-link.md). */
export const DEVICE_CERTIFICATE_VALIDITY: ValidityPeriod = { years: 20 };

/** What is fixed per issuing CA and secure object: the issuer, the factory and the validity. */
export interface DeviceProfileOptions {
  /** DER of the intermediate CA that signs (e.g. fio-device-gateway-ca). */
  readonly issuerCert: Uint8Array;
  readonly factory: string;
  readonly validity?: ValidityPeriod;
}

/** What changes per device certificate. */
export interface DeviceCertificateRequest {
  readonly deviceId: DeviceId;
  /** The device key from its verified CSR: P-256, uncompressed point. */
  readonly publicKeySpki: Uint8Array;
  readonly signer: Signer;
  /** Unsigned big-endian serial; default a random positive 128-bit one. */
  readonly serial?: Uint8Array;
  readonly now?: Date;
}

/**
 * The device profile's extensions: CA:false, digitalSignature (critical), clientAuth, SKI, AKI.
 * The fast path in device-template.ts encodes these same values.
 */
export const DEVICE_EXTENSIONS: ExtensionsSpec = {
  basicConstraints: { ca: false },
  keyUsage: ['digitalSignature'],
  extKeyUsage: ['clientAuth'],
};

/** The device subject: OU = factory, CN = UID as 36 lowercase hex, serialNumber = decimal id. */
export function deviceSubject(factory: string, deviceId: DeviceId): DnSpec {
  checkDeviceId(deviceId);
  return { OU: factory, CN: deviceId.hex, serialNumber: deviceId.decimal };
}

/**
 * A device certificate built through the generic ASN.1 path. {@link deviceCertificate} gives
 * the same bytes far faster; this one is the reference it is tested against.
 */
export async function deviceCertificateGeneric(
  options: DeviceProfileOptions & DeviceCertificateRequest,
): Promise<Uint8Array> {
  requireDeviceKey(options.publicKeySpki);
  return issueCertificate({
    issuer: issuerFromCertificate(options.issuerCert),
    subject: deviceSubject(options.factory, options.deviceId),
    subjectPublicKeySpki: options.publicKeySpki,
    serial: options.serial ?? randomSerial(LEAF_SERIAL_BITS),
    ...validityFor(options.now ?? new Date(), options.validity ?? DEVICE_CERTIFICATE_VALIDITY),
    extensions: DEVICE_EXTENSIONS,
    signer: options.signer,
  });
}

/** Refuses a device key that is not P-256 in the canonical uncompressed form. */
export function requireDeviceKey(spki: Uint8Array): void {
  if (!isP256Spki(spki)) {
    throw new KeyferryError('csr_invalid', 'device key must be a P-256 key (uncompressed point)');
  }
}

/** Catches a hand-made DeviceId that parseDeviceId would not have produced. */
export function checkDeviceId(deviceId: DeviceId): void {
  if (!/^[0-9a-f]{36}$/.test(deviceId.hex) || !/^[0-9]{42}$/.test(deviceId.decimal)) {
    throw new TypeError('deviceId must come from parseDeviceId or deviceIdFromUid');
  }
}

import { randomBytes } from 'node:crypto';
import {
  type DeviceId,
  deviceIdFromUid,
  issueCertificate,
  issuerFromCertificate,
  randomSerial,
  type ValidityPeriod,
  validityFor,
} from '@keyferry/core';
import type { VendorCa } from './vendor-ca.ts';

/** Simulated identities live long, like real vendor-injected ones. */
export const IDENTITY_VALIDITY: ValidityPeriod = { years: 30 };

/** SE05x UIDs begin with the vendor/chip bytes 04 00 50 01; the rest is random here. */
const UID_PREFIX = Buffer.from('04005001', 'hex');

/** A fresh random UID in the SE05x shape (18 bytes, 04005001…). */
export function randomUid(): DeviceId {
  return deviceIdFromUid(Buffer.concat([UID_PREFIX, randomBytes(14)]));
}

/** Options of {@link identityCertificate}. */
export interface IdentityCertificateOptions {
  readonly vendor: Pick<VendorCa, 'certificate' | 'signer'>;
  readonly uid: DeviceId;
  /** The product's 12NC. */
  readonly product: string;
  /** DER SubjectPublicKeyInfo of the identity key (object 0xF0000000). */
  readonly publicKeySpki: Uint8Array;
  readonly now?: Date;
  readonly validity?: ValidityPeriod;
}

/**
 * The vendor identity certificate (object 0xF0000001): CN = UID hex,
 * serialNumber = UID hex, OU = 12NC, clientAuth, signed by the vendor CA.
 */
export function identityCertificate(options: IdentityCertificateOptions): Promise<Uint8Array> {
  return issueCertificate({
    issuer: issuerFromCertificate(options.vendor.certificate),
    subject: { OU: options.product, CN: options.uid.hex, serialNumber: options.uid.hex },
    subjectPublicKeySpki: options.publicKeySpki,
    serial: randomSerial(128),
    ...validityFor(options.now ?? new Date(), options.validity ?? IDENTITY_VALIDITY),
    extensions: {
      basicConstraints: { ca: false },
      keyUsage: ['digitalSignature'],
      extKeyUsage: ['clientAuth'],
    },
    signer: options.vendor.signer,
  });
}

import { AsnConvert } from '@peculiar/asn1-schema';
import type { Extension } from '@peculiar/asn1-x509';
import { concatBytes, encodeTlv, readTlv, TAG, u8 } from './der.ts';
import { DerWriter, timeSize, tlvSize } from './der-writer.ts';
import {
  checkDeviceId,
  DEVICE_CERTIFICATE_VALIDITY,
  DEVICE_EXTENSIONS,
  type DeviceCertificateRequest,
  type DeviceProfileOptions,
  requireDeviceKey,
} from './device-profile.ts';
import { buildExtensions } from './extensions.ts';
import { issuerFromCertificate, LEAF_SERIAL_BITS } from './issue.ts';
import { encodeName } from './name.ts';
import { keyIdentifier, publicKeysEqual } from './public-key.ts';
import { randomSerial, serialContent, serialToHex } from './serial.ts';
import { ECDSA_WITH_SHA256_DER, signedStructure } from './signature.ts';
import { type ValidityPeriod, validityFor } from './validity.ts';

/**
 * The device profile pre-encoded for one issuing CA: everything but serial, validity,
 * subject CN/serialNumber, key and SKI is DER already. Make one per (CA, factory, validity)
 * and keep it; it holds no secret.
 */
export interface DeviceCertificateTemplate {
  readonly issuerSpki: Uint8Array;
  readonly factory: string;
  readonly validity: ValidityPeriod;
  /** Pre-encoded parts; internal to {@link deviceCertificate}. */
  readonly parts: {
    readonly version: Uint8Array;
    readonly algorithmAndIssuer: Uint8Array;
    readonly organizationalUnitRdn: Uint8Array;
    readonly extensionsBeforeSki: Uint8Array;
    readonly skiHeader: Uint8Array;
    readonly akiExtension: Uint8Array;
  };
}

const VERSION_3 = Uint8Array.of(0xa0, 0x03, 0x02, 0x01, 0x02);
const CN_OID = encodeTlv(TAG.OID, Uint8Array.of(0x55, 0x04, 0x03));
const SERIAL_NUMBER_OID = encodeTlv(TAG.OID, Uint8Array.of(0x55, 0x04, 0x05));
const SKI_BYTES = 20;

/**
 * Pre-encodes the device profile for an issuing CA. The constant parts come from the same
 * encoders the generic path uses, so the two cannot drift apart silently (a test compares them).
 */
export function deviceCertificateTemplate(options: DeviceProfileOptions): DeviceCertificateTemplate {
  const issuer = issuerFromCertificate(options.issuerCert);
  const authorityKeyId = issuer.keyIdentifier ?? keyIdentifier(issuer.publicKeySpki);
  // A placeholder SKI of the right size gives the extension's header; only its 20 bytes vary.
  const extensions = buildExtensions(DEVICE_EXTENSIONS, new Uint8Array(SKI_BYTES), authorityKeyId).map(
    (ext: Extension) => u8(AsnConvert.serialize(ext)),
  );
  const aki = extensions.pop()!;
  const ski = extensions.pop()!;
  // encodeName gives SEQUENCE { SET {...} }: keep the SET, the RDN itself.
  const ouName = encodeName({ OU: options.factory });
  const ouRdn = ouName.subarray(readTlv(ouName, 0).valueStart);
  return {
    issuerSpki: issuer.publicKeySpki,
    factory: options.factory,
    validity: options.validity ?? DEVICE_CERTIFICATE_VALIDITY,
    parts: {
      version: VERSION_3,
      algorithmAndIssuer: concatBytes([ECDSA_WITH_SHA256_DER, issuer.name]),
      organizationalUnitRdn: ouRdn,
      extensionsBeforeSki: concatBytes(extensions),
      skiHeader: ski.subarray(0, ski.length - SKI_BYTES),
      akiExtension: aki,
    },
  };
}

/** Options of {@link deviceCertificate}. */
export interface DeviceCertificateOptions extends DeviceCertificateRequest {
  readonly template: DeviceCertificateTemplate;
}

/**
 * Issues a device certificate (docs/device-link.md) on the hot path: splices serial, validity, subject,
 * key and SKI into the template and signs. Byte-identical to {@link deviceCertificateGeneric}.
 */
export async function deviceCertificate(options: DeviceCertificateOptions): Promise<Uint8Array> {
  const tbs = deviceTbsCertificate(options);
  return signedStructure(tbs, await options.signer.sign(tbs));
}

/** A device certificate with the fields the service stores beside it. */
export interface IssuedDeviceCertificate {
  readonly der: Uint8Array;
  readonly serialHex: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/**
 * {@link deviceCertificate} with its serial and validity, chosen here rather than read back
 * from the DER: the enrollment path then parses nothing it has just built.
 */
export async function issueDeviceCertificate(
  options: DeviceCertificateOptions,
): Promise<IssuedDeviceCertificate> {
  const serial = options.serial ?? randomSerial(LEAF_SERIAL_BITS);
  const now = options.now ?? new Date();
  const { notBefore, notAfter } = validityFor(now, options.template.validity);
  const der = await deviceCertificate({ ...options, serial, now });
  return { der, serialHex: serialToHex(serialContent(serial)), notBefore, notAfter };
}

/** The TBSCertificate {@link deviceCertificate} signs. */
export function deviceTbsCertificate(options: DeviceCertificateOptions): Uint8Array {
  const { template, deviceId, publicKeySpki } = options;
  const parts = template.parts;
  if (!publicKeysEqual(options.signer.publicKeySpki, template.issuerSpki)) {
    throw new TypeError("the signer's key is not the template issuer's key");
  }
  requireDeviceKey(publicKeySpki);
  checkDeviceId(deviceId);
  const serial =
    options.serial === undefined ? randomSerial(LEAF_SERIAL_BITS) : serialContent(options.serial);
  const { notBefore, notAfter } = validityFor(options.now ?? new Date(), template.validity);
  const ski = keyIdentifier(publicKeySpki);

  // Sizes first (see DerWriter), innermost out; then one pass writes the bytes in order.
  const cnAttribute = CN_OID.length + tlvSize(deviceId.hex.length);
  const serialNumberAttribute = SERIAL_NUMBER_OID.length + tlvSize(deviceId.decimal.length);
  const subject =
    parts.organizationalUnitRdn.length +
    tlvSize(tlvSize(cnAttribute)) +
    tlvSize(tlvSize(serialNumberAttribute));
  const validity = timeSize(notBefore) + timeSize(notAfter);
  const extensions =
    parts.extensionsBeforeSki.length + parts.skiHeader.length + ski.length + parts.akiExtension.length;
  const tbs =
    parts.version.length +
    tlvSize(serial.length) +
    parts.algorithmAndIssuer.length +
    tlvSize(validity) +
    tlvSize(subject) +
    publicKeySpki.length +
    tlvSize(tlvSize(extensions));

  return new DerWriter(tlvSize(tbs))
    .header(TAG.SEQUENCE, tbs)
    .raw(parts.version)
    .header(TAG.INTEGER, serial.length)
    .raw(serial)
    .raw(parts.algorithmAndIssuer)
    .header(TAG.SEQUENCE, validity)
    .time(notBefore)
    .time(notAfter)
    .header(TAG.SEQUENCE, subject)
    .raw(parts.organizationalUnitRdn)
    .header(TAG.SET, tlvSize(cnAttribute))
    .header(TAG.SEQUENCE, cnAttribute)
    .raw(CN_OID)
    .header(TAG.UTF8_STRING, deviceId.hex.length)
    .ascii(deviceId.hex)
    .header(TAG.SET, tlvSize(serialNumberAttribute))
    .header(TAG.SEQUENCE, serialNumberAttribute)
    .raw(SERIAL_NUMBER_OID)
    .header(TAG.PRINTABLE_STRING, deviceId.decimal.length)
    .ascii(deviceId.decimal)
    .raw(publicKeySpki)
    .header(0xa3, tlvSize(extensions))
    .header(TAG.SEQUENCE, extensions)
    .raw(parts.extensionsBeforeSki)
    .raw(parts.skiHeader)
    .raw(ski)
    .raw(parts.akiExtension)
    .finish();
}

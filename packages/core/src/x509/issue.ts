import { AsnConvert } from '@peculiar/asn1-schema';
import { Extensions, SubjectPublicKeyInfo, TBSCertificate, Validity, Version } from '@peculiar/asn1-x509';
import { KeyferryError } from '../errors.ts';
import { parseCertificate } from './certificate.ts';
import { u8 } from './der.ts';
import { buildExtensions, type ExtensionsSpec } from './extensions.ts';
import { buildName, type DnSpec, nameFromDer } from './name.ts';
import { keyIdentifier, publicKeyObject, publicKeysEqual } from './public-key.ts';
import { randomSerial, serialContent } from './serial.ts';
import { ECDSA_WITH_SHA256, signedStructure } from './signature.ts';
import type { Signer } from './signer.ts';
import { certificateTime } from './validity.ts';

/** Who signs a certificate: the issuer's name and key as its own certificate states them. */
export interface Issuer {
  /** DER of the issuer's subject Name (copied byte for byte), or a spec for a new name. */
  readonly name: Uint8Array | DnSpec;
  /** The issuer's DER SubjectPublicKeyInfo; the signer must hold this key. */
  readonly publicKeySpki: Uint8Array;
  /** The issuer certificate's SKI, for the AKI; default: computed from the key (RFC 5280 method 1). */
  readonly keyIdentifier?: Uint8Array;
}

/** Options of {@link issueCertificate}. */
export interface IssueCertificateOptions {
  readonly issuer: Issuer;
  /** A subject spec or the DER of a Name (copied byte for byte). */
  readonly subject: DnSpec | Uint8Array;
  readonly subjectPublicKeySpki: Uint8Array;
  /** Unsigned big-endian serial; default a random positive 128-bit one. */
  readonly serial?: Uint8Array;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly extensions: ExtensionsSpec;
  readonly signer: Signer;
}

/** The serial size of end-entity certificates (docs/device-link.md; RFC 5280 allows at most 20 octets). */
export const LEAF_SERIAL_BITS = 128;
/** The serial size of CA certificates. */
export const CA_SERIAL_BITS = 160;

/**
 * Issues an X.509 v3 certificate signed with ecdsa-with-SHA256, built from the ASN.1
 * structures of @peculiar/asn1-x509. Every profile goes through here except the device
 * profile's fast path, which is tested to give the same bytes.
 */
export async function issueCertificate(options: IssueCertificateOptions): Promise<Uint8Array> {
  const tbs = tbsCertificateDer(options);
  return signedStructure(tbs, await options.signer.sign(tbs));
}

/** The DER TBSCertificate {@link issueCertificate} signs (exported for the fast-path test). */
export function tbsCertificateDer(options: IssueCertificateOptions): Uint8Array {
  const { issuer, signer } = options;
  if (!publicKeysEqual(signer.publicKeySpki, issuer.publicKeySpki)) {
    throw new TypeError("the signer's key is not the issuer's key");
  }
  if (!(options.notAfter.getTime() > options.notBefore.getTime())) {
    throw new TypeError('notAfter must be after notBefore');
  }
  try {
    publicKeyObject(options.subjectPublicKeySpki);
  } catch {
    throw new TypeError('subjectPublicKeySpki is not a valid DER SubjectPublicKeyInfo');
  }
  const serial =
    options.serial === undefined ? randomSerial(LEAF_SERIAL_BITS) : serialContent(options.serial);
  const authorityKeyId = issuer.keyIdentifier ?? keyIdentifier(issuer.publicKeySpki);
  const extensions = buildExtensions(
    options.extensions,
    keyIdentifier(options.subjectPublicKeySpki),
    authorityKeyId,
  );
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: serial.slice().buffer,
    signature: ECDSA_WITH_SHA256,
    issuer: issuer.name instanceof Uint8Array ? nameFromDer(issuer.name) : buildName(issuer.name),
    validity: new Validity(),
    subject:
      options.subject instanceof Uint8Array ? nameFromDer(options.subject) : buildName(options.subject),
    subjectPublicKeyInfo: AsnConvert.parse(options.subjectPublicKeySpki, SubjectPublicKeyInfo),
    extensions: new Extensions(extensions),
  });
  tbs.validity.notBefore = certificateTime(options.notBefore);
  tbs.validity.notAfter = certificateTime(options.notAfter);
  return u8(AsnConvert.serialize(tbs));
}

/** An {@link Issuer} read from a certificate: its name is always the exact DER. */
export interface CertificateIssuer extends Issuer {
  readonly name: Uint8Array;
}

/**
 * The {@link Issuer} described by a CA certificate (its subject, key and SKI). Throws
 * `certificate_invalid` when the certificate may not sign certificates.
 */
export function issuerFromCertificate(issuerCert: Uint8Array): CertificateIssuer {
  const parsed = parseCertificate(issuerCert);
  if (!parsed.isCa || (parsed.keyUsage.length > 0 && !parsed.keyUsage.includes('keyCertSign'))) {
    throw new KeyferryError(
      'certificate_invalid',
      `issuer ${parsed.subject.text} is not a CA that may sign certificates`,
    );
  }
  const base = { name: parsed.subject.der, publicKeySpki: parsed.spki };
  return parsed.ski === undefined ? base : { ...base, keyIdentifier: u8(Buffer.from(parsed.ski, 'hex')) };
}

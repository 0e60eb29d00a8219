import { KeyferryError } from '../errors.ts';
import { type ParsedCsr, parseAndVerifyCsr, verifyCsr } from './csr.ts';
import { CA_SERIAL_BITS, issueCertificate, issuerFromCertificate, LEAF_SERIAL_BITS } from './issue.ts';
import type { DnSpec } from './name.ts';
import { randomSerial } from './serial.ts';
import type { Signer } from './signer.ts';
import { type ValidityPeriod, validityFor } from './validity.ts';

/** The factory root's subject CN (as fioctl names it). */
export const FACTORY_ROOT_CN = 'Factory-CA';
/** Validity of the offline factory root. */
export const FACTORY_ROOT_YEARS = 20;
/** Validity of an EL2GO intermediate the root signs. */
export const INTERMEDIATE_CA_YEARS = 10;
/** Default validity of TLS server certificates (the device gateway's, like fioctl's tls-crt). */
export const TLS_SERVER_YEARS = 10;

/** Options of {@link factoryRootProfile}. */
export interface FactoryRootOptions {
  readonly factory: string;
  readonly signer: Signer;
  readonly now?: Date;
}

/** The self-signed factory root: CN=Factory-CA, OU=<factory>, CA, keyCertSign+cRLSign, 20 years. */
export async function factoryRootProfile(options: FactoryRootOptions): Promise<Uint8Array> {
  if (typeof options.factory !== 'string' || options.factory === '')
    throw new TypeError('factory name is empty');
  return selfSignedCa({
    subject: { OU: options.factory, CN: FACTORY_ROOT_CN },
    signer: options.signer,
    years: FACTORY_ROOT_YEARS,
    ...(options.now === undefined ? {} : { now: options.now }),
  });
}

/** Options of {@link selfSignedCa}. */
export interface SelfSignedCaOptions {
  readonly subject: DnSpec | Uint8Array;
  readonly signer: Signer;
  readonly years: number;
  readonly now?: Date;
  /** Limit on intermediates below this CA; default none. */
  readonly pathLen?: number;
}

/**
 * A self-signed CA (the factory root, the simulated vendor CA, the service CA): CA:true
 * critical, keyCertSign+cRLSign critical, SKI = AKI, random 160-bit serial.
 */
export async function selfSignedCa(options: SelfSignedCaOptions): Promise<Uint8Array> {
  const { signer } = options;
  const validity = validityFor(options.now ?? new Date(), { years: options.years });
  return issueCertificate({
    issuer: { name: options.subject, publicKeySpki: signer.publicKeySpki },
    subject: options.subject,
    subjectPublicKeySpki: signer.publicKeySpki,
    serial: randomSerial(CA_SERIAL_BITS),
    ...validity,
    extensions: {
      basicConstraints: options.pathLen === undefined ? { ca: true } : { ca: true, pathLen: options.pathLen },
      keyUsage: ['keyCertSign', 'cRLSign'],
    },
    signer,
  });
}

/** Options of {@link intermediateCaFromCsr}. */
export interface IntermediateCaOptions {
  /** DER CSR, or one already parsed (it is verified again either way). */
  readonly csr: Uint8Array | ParsedCsr;
  readonly issuerCert: Uint8Array;
  readonly signer: Signer;
  readonly now?: Date;
  readonly years?: number;
}

/**
 * An EL2GO intermediate signed by the factory root from the service's CSR: subject copied
 * from the CSR, CA:true pathlen 0, keyCertSign+cRLSign, 10 years. The CSR must carry a P-256
 * key (intermediates are NIST_P256) and a valid self-signature.
 */
export async function intermediateCaFromCsr(options: IntermediateCaOptions): Promise<Uint8Array> {
  const csr = checkedCsr(options.csr);
  return issueCertificate({
    issuer: issuerFromCertificate(options.issuerCert),
    subject: csr.subject.der,
    subjectPublicKeySpki: csr.publicKeySpki,
    serial: randomSerial(CA_SERIAL_BITS),
    ...validityFor(options.now ?? new Date(), { years: options.years ?? INTERMEDIATE_CA_YEARS }),
    extensions: { basicConstraints: { ca: true, pathLen: 0 }, keyUsage: ['keyCertSign', 'cRLSign'] },
    signer: options.signer,
  });
}

/** Options of {@link tlsServerFromCsr}. */
export interface TlsServerFromCsrOptions {
  readonly csr: Uint8Array | ParsedCsr;
  readonly issuerCert: Uint8Array;
  readonly signer: Signer;
  readonly dnsNames: readonly string[];
  readonly now?: Date;
  readonly years?: number;
}

/**
 * The device gateway's TLS certificate from its CSR: subject from the CSR, the given DNS
 * names as SANs, digitalSignature (critical), serverAuth, CA:false, 10 years by default.
 */
export async function tlsServerFromCsr(options: TlsServerFromCsrOptions): Promise<Uint8Array> {
  const csr = checkedCsr(options.csr);
  return issueCertificate({
    issuer: issuerFromCertificate(options.issuerCert),
    subject: csr.subject.der,
    subjectPublicKeySpki: csr.publicKeySpki,
    serial: randomSerial(LEAF_SERIAL_BITS),
    ...validityFor(options.now ?? new Date(), { years: options.years ?? TLS_SERVER_YEARS }),
    extensions: serverExtensions(options.dnsNames, []),
    signer: options.signer,
  });
}

/** Options of {@link serverCertificate}. */
export interface ServerCertificateOptions {
  readonly issuerCert: Uint8Array;
  readonly signer: Signer;
  readonly publicKeySpki: Uint8Array;
  readonly dnsNames: readonly string[];
  readonly ipAddresses?: readonly string[];
  /** Default CN = the first DNS name. */
  readonly subject?: DnSpec;
  readonly validity?: ValidityPeriod;
  readonly now?: Date;
}

/**
 * A TLS server certificate for a key keyferry holds itself (the device-link listener's, e.g.
 * `*.device-link.localhost`): SANs, digitalSignature (critical), serverAuth, CA:false.
 */
export async function serverCertificate(options: ServerCertificateOptions): Promise<Uint8Array> {
  const first = options.dnsNames[0];
  if (first === undefined) throw new TypeError('a server certificate needs at least one DNS name');
  return issueCertificate({
    issuer: issuerFromCertificate(options.issuerCert),
    subject: options.subject ?? { CN: first },
    subjectPublicKeySpki: options.publicKeySpki,
    serial: randomSerial(LEAF_SERIAL_BITS),
    ...validityFor(options.now ?? new Date(), options.validity ?? { years: TLS_SERVER_YEARS }),
    extensions: serverExtensions(options.dnsNames, options.ipAddresses ?? []),
    signer: options.signer,
  });
}

function serverExtensions(dnsNames: readonly string[], ipAddresses: readonly string[]) {
  if (dnsNames.length === 0 && ipAddresses.length === 0) {
    throw new TypeError('a TLS server certificate needs at least one DNS name or IP address');
  }
  return {
    basicConstraints: { ca: false },
    keyUsage: ['digitalSignature'],
    extKeyUsage: ['serverAuth'],
    dnsNames,
    ipAddresses,
  } as const;
}

function checkedCsr(csr: Uint8Array | ParsedCsr): ParsedCsr {
  const parsed = csr instanceof Uint8Array ? parseAndVerifyCsr(csr) : verifyCsr(csr);
  if (parsed.subject.rdns.length === 0) throw new KeyferryError('csr_invalid', 'CSR subject is empty');
  return parsed;
}

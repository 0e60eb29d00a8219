import type { KeyObject } from 'node:crypto';
import { Attributes, CertificationRequestInfo } from '@peculiar/asn1-csr';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Attribute, Extensions, SubjectPublicKeyInfo } from '@peculiar/asn1-x509';
import { KeyferryError } from '../errors.ts';
import { type CsrFields, readCsrFields, requestedDnsNames } from './csr-der.ts';
import { childrenOf, DerError, readWhole, TAG, type Tlv, tlvBytes, u8, valueBytes } from './der.ts';
import { buildExtensions } from './extensions.ts';
import { buildName, type DistinguishedName, type DnSpec, nameFromDer } from './name.ts';
import { OID } from './oids.ts';
import { type KeyAlgorithm, keyAlgorithmOf, keyIdentifier, publicKeyObject } from './public-key.ts';
import { signatureAlgorithmName, signedStructure, verifyWithKey } from './signature.ts';
import type { Signer } from './signer.ts';

/**
 * The largest CSR keyferry reads. A P-256 CSR with a few SANs is under 1 KiB; the limit
 * leaves room for RSA-4096 requests (so they are refused for their key, not their size)
 * while bounding what an unauthenticated parser sees.
 */
export const MAX_CSR_BYTES = 8192;

/** A decoded PKCS#10 request. Nothing in it is trusted until {@link verifyCsr} passed. */
export interface ParsedCsr {
  readonly der: Uint8Array;
  readonly subject: DistinguishedName;
  readonly publicKeySpki: Uint8Array;
  readonly keyAlgorithm: KeyAlgorithm;
  /** DNS names from a subjectAltName in the extensionRequest attribute. */
  readonly dnsNames: readonly string[];
  readonly signatureAlgorithm: string;
  /** The exact certificationRequestInfo bytes the signature covers. */
  readonly signedBytes: Uint8Array;
  readonly signature: Uint8Array;
}

/** Options of {@link createCsr}. */
export interface CreateCsrOptions {
  /** A subject spec or the DER of a Name. */
  readonly subject: DnSpec | Uint8Array;
  readonly dnsNames?: readonly string[];
  readonly signer: Signer;
}

/** Options of {@link verifyCsr}. */
export interface VerifyCsrOptions {
  /** The key algorithm the request must carry; default `P-256`, `any` accepts every key. */
  readonly keyAlgorithm?: KeyAlgorithm | 'any';
}

/** A PKCS#10 request (DER) for the signer's key, signed with ecdsa-with-SHA256. */
export async function createCsr(options: CreateCsrOptions): Promise<Uint8Array> {
  const { signer } = options;
  const attributes: Attribute[] = [];
  if (options.dnsNames !== undefined && options.dnsNames.length > 0) {
    const san = buildExtensions(
      { dnsNames: options.dnsNames, subjectKeyIdentifier: false, authorityKeyIdentifier: false },
      keyIdentifier(signer.publicKeySpki),
      undefined,
    );
    attributes.push(
      new Attribute({ type: OID.extensionRequest, values: [AsnConvert.serialize(new Extensions(san))] }),
    );
  }
  const info = new CertificationRequestInfo({
    version: 0,
    subject:
      options.subject instanceof Uint8Array ? nameFromDer(options.subject) : buildName(options.subject),
    subjectPKInfo: AsnConvert.parse(signer.publicKeySpki, SubjectPublicKeyInfo),
    attributes: new Attributes(attributes),
  });
  const infoDer = u8(AsnConvert.serialize(info));
  return signedStructure(infoDer, await signer.sign(infoDer));
}

/**
 * Decodes a DER PKCS#10 request. Throws `csr_invalid` saying what is wrong: too large, not
 * DER (PEM given, truncated, trailing bytes), not a certification request, wrong version.
 */
export function parseCsr(der: Uint8Array): ParsedCsr {
  if (!(der instanceof Uint8Array)) throw new TypeError('parseCsr takes the DER bytes of a CSR');
  if (der.length > MAX_CSR_BYTES) {
    throw refuse(`CSR is ${der.length} bytes; the limit is ${MAX_CSR_BYTES}`);
  }
  if (der[0] === 0x2d)
    throw refuse('CSR is PEM text, not DER; decode the base64 between the BEGIN/END lines');
  let parts: { info: Uint8Array; subject: Uint8Array; spki: Uint8Array; signature: Uint8Array };
  let fields: CsrFields;
  try {
    const outer = splitCsr(der);
    parts = outer.parts;
    fields = readCsrFields(der, outer.info, outer.algorithm);
  } catch (error) {
    if (error instanceof DerError) throw refuse(`CSR is not valid DER: ${error.message}`);
    if (error instanceof KeyferryError || !(error instanceof Error)) throw error;
    // A CsrShapeError, or the ASN.1 library's error from a rare subject's fallback reader.
    throw refuse(`not a PKCS#10 certification request: ${error.message}`);
  }
  if (fields.version !== 0) throw refuse(`CSR version ${fields.version} is not 0 (PKCS#10 v1)`);
  let keyAlgorithm: KeyAlgorithm;
  let dnsNames: string[];
  try {
    keyAlgorithm = keyAlgorithmOf(parts.spki);
    dnsNames = requestedDnsNames(fields.extensionRequests);
  } catch (error) {
    throw refuse(`CSR content is malformed: ${(error as Error).message}`);
  }
  return {
    der,
    subject: fields.subject,
    publicKeySpki: parts.spki,
    keyAlgorithm,
    dnsNames,
    signatureAlgorithm: fields.signatureAlgorithm,
    signedBytes: parts.info,
    signature: parts.signature,
  };
}

/**
 * Checks a parsed request's self-signature (proof that the requester holds the key) and its
 * key algorithm. Throws `csr_invalid`; returns the same request for chaining.
 */
export function verifyCsr(csr: ParsedCsr, options: VerifyCsrOptions = {}): ParsedCsr {
  const wanted = options.keyAlgorithm ?? 'P-256';
  if (wanted !== 'any' && csr.keyAlgorithm !== wanted) {
    throw refuse(`CSR key is ${csr.keyAlgorithm}; a ${wanted} key is required`);
  }
  let key: KeyObject;
  try {
    key = publicKeyObject(csr.publicKeySpki);
  } catch {
    throw refuse(`CSR public key is not a valid ${csr.keyAlgorithm} key`);
  }
  const name = signatureAlgorithmName(csr.signatureAlgorithm);
  if (name === undefined) throw refuse(`CSR signature algorithm ${csr.signatureAlgorithm} is not supported`);
  if (!verifyWithKey(csr.signatureAlgorithm, key, csr.signedBytes, csr.signature)) {
    throw refuse(`CSR signature (${name}) does not verify with the CSR's public key`);
  }
  return csr;
}

/** Parses then verifies: the one call a request handler makes. */
export function parseAndVerifyCsr(der: Uint8Array, options: VerifyCsrOptions = {}): ParsedCsr {
  return verifyCsr(parseCsr(der), options);
}

function splitCsr(der: Uint8Array): {
  info: Tlv;
  algorithm: Tlv;
  parts: { info: Uint8Array; subject: Uint8Array; spki: Uint8Array; signature: Uint8Array };
} {
  const outer = readWhole(der, TAG.SEQUENCE);
  const [info, algorithm, signature, extra] = childrenOf(der, outer);
  if (
    info?.tag !== TAG.SEQUENCE ||
    algorithm?.tag !== TAG.SEQUENCE ||
    signature?.tag !== TAG.BIT_STRING ||
    extra
  ) {
    throw refuse('not a PKCS#10 certification request: not SEQUENCE { info, algorithm, signature }');
  }
  const [version, subject, spki] = childrenOf(der, info);
  // A certificate has the same outer shape; its signed part starts with [0] version.
  if (version?.tag === 0xa0) throw refuse('this is an X.509 certificate, not a certification request');
  if (subject?.tag !== TAG.SEQUENCE || spki?.tag !== TAG.SEQUENCE) {
    throw refuse('not a PKCS#10 certification request: no subject and public key');
  }
  const bits = valueBytes(der, signature);
  if (bits[0] !== 0) throw refuse('CSR signature bit string has unused bits');
  return {
    info,
    algorithm,
    parts: {
      info: tlvBytes(der, info),
      subject: tlvBytes(der, subject),
      spki: tlvBytes(der, spki),
      signature: bits.subarray(1),
    },
  };
}

function refuse(message: string): KeyferryError {
  return new KeyferryError('csr_invalid', message);
}

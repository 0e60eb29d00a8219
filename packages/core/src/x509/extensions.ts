import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  AuthorityKeyIdentifier,
  BasicConstraints,
  ExtendedKeyUsage,
  Extension,
  GeneralName,
  KeyIdentifier,
  KeyUsage,
  KeyUsageFlags,
  SubjectAlternativeName,
  SubjectKeyIdentifier,
} from '@peculiar/asn1-x509';
import { toHex, u8 } from './der.ts';
import { EXT_KEY_USAGE_OIDS, type ExtKeyUsageName, OID } from './oids.ts';

/** Key usage bits by their RFC 5280 §4.2.1.3 names. */
export type KeyUsageName = keyof typeof KeyUsageFlags;
const KEY_USAGE_NAMES = Object.keys(KeyUsageFlags).filter((k) => Number.isNaN(Number(k))) as KeyUsageName[];

/** The extensions a certificate gets, in the order they are written. */
export interface ExtensionsSpec {
  /** Critical by default for a CA (RFC 5280 §4.2.1.9 requires it), not for an end entity. */
  readonly basicConstraints?: {
    readonly ca: boolean;
    readonly pathLen?: number;
    readonly critical?: boolean;
  };
  /** Always written critical. */
  readonly keyUsage?: readonly KeyUsageName[];
  readonly extKeyUsage?: readonly ExtKeyUsageName[];
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  /** SKI from the subject key (method 1); default true. */
  readonly subjectKeyIdentifier?: boolean;
  /** AKI from the issuer's key identifier; default true. */
  readonly authorityKeyIdentifier?: boolean;
}

/** What a certificate's extensions say, decoded. */
export interface ExtensionSummary {
  isCa: boolean;
  pathLen: number | undefined;
  /** Empty when the extension is absent (any use allowed); a present one has at least one bit. */
  keyUsage: KeyUsageName[];
  /** Known purposes by name, others as dotted OIDs; empty when the extension is absent. */
  extKeyUsage: string[];
  dnsNames: string[];
  ipAddresses: string[];
  /** Lowercase hex, undefined when absent. */
  ski: string | undefined;
  aki: string | undefined;
  /** OIDs of critical extensions keyferry does not understand (RFC 5280 §4.2: reject such certs). */
  unknownCritical: string[];
}

const DNS_NAME = /^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/**
 * Builds the extension list: basicConstraints, keyUsage, extKeyUsage, subjectAltName, SKI,
 * AKI — a fixed order, so the fast device path can reproduce it byte for byte.
 */
export function buildExtensions(
  spec: ExtensionsSpec,
  subjectKeyId: Uint8Array,
  authorityKeyId: Uint8Array | undefined,
): Extension[] {
  const out: Extension[] = [];
  const bc = spec.basicConstraints;
  if (bc !== undefined) {
    if (bc.pathLen !== undefined && (!bc.ca || !Number.isInteger(bc.pathLen) || bc.pathLen < 0)) {
      throw new TypeError('pathLen is a non-negative integer and only for a CA');
    }
    const value = new BasicConstraints(
      bc.pathLen === undefined ? { cA: bc.ca } : { cA: bc.ca, pathLenConstraint: bc.pathLen },
    );
    out.push(extension(OID.basicConstraints, bc.critical ?? bc.ca, value));
  }
  if (spec.keyUsage !== undefined && spec.keyUsage.length > 0) {
    let flags = 0;
    for (const name of spec.keyUsage) {
      if (!KEY_USAGE_NAMES.includes(name)) throw new TypeError(`unknown key usage ${JSON.stringify(name)}`);
      flags |= KeyUsageFlags[name];
    }
    out.push(extension(OID.keyUsage, true, new KeyUsage(flags)));
  }
  if (spec.extKeyUsage !== undefined && spec.extKeyUsage.length > 0) {
    const oids = spec.extKeyUsage.map((name) => {
      const oid = EXT_KEY_USAGE_OIDS[name];
      if (oid === undefined) throw new TypeError(`unknown extended key usage ${JSON.stringify(name)}`);
      return oid;
    });
    out.push(extension(OID.extKeyUsage, false, new ExtendedKeyUsage(oids)));
  }
  const names = [
    ...(spec.dnsNames ?? []).map((name) => new GeneralName({ dNSName: checkDnsName(name) })),
    ...(spec.ipAddresses ?? []).map((ip) => new GeneralName({ iPAddress: ip })),
  ];
  if (names.length > 0) out.push(extension(OID.subjectAltName, false, new SubjectAlternativeName(names)));
  if (spec.subjectKeyIdentifier ?? true) {
    out.push(extension(OID.subjectKeyIdentifier, false, new SubjectKeyIdentifier(subjectKeyId)));
  }
  if ((spec.authorityKeyIdentifier ?? true) && authorityKeyId !== undefined) {
    const aki = new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(authorityKeyId) });
    out.push(extension(OID.authorityKeyIdentifier, false, aki));
  }
  return out;
}

/** Returns a DNS name for a SAN after checking its syntax (letters, digits, hyphens, one leading `*.`). */
function checkDnsName(name: string): string {
  if (typeof name !== 'string' || name.length > 253 || !DNS_NAME.test(name)) {
    throw new TypeError(`invalid DNS name ${JSON.stringify(name)}`);
  }
  return name;
}

/** Decodes the extensions keyferry understands; throws on a malformed one. */
export function summarizeExtensions(extensions: readonly Extension[]): ExtensionSummary {
  const summary: ExtensionSummary = {
    isCa: false,
    pathLen: undefined,
    keyUsage: [],
    extKeyUsage: [],
    dnsNames: [],
    ipAddresses: [],
    ski: undefined,
    aki: undefined,
    unknownCritical: [],
  };
  const seen = new Set<string>();
  for (const ext of extensions) {
    if (seen.has(ext.extnID)) throw new TypeError(`extension ${ext.extnID} appears twice`);
    seen.add(ext.extnID);
    const value = ext.extnValue.buffer;
    switch (ext.extnID) {
      case OID.basicConstraints: {
        const bc = AsnConvert.parse(value, BasicConstraints);
        summary.isCa = bc.cA;
        summary.pathLen = bc.pathLenConstraint;
        break;
      }
      case OID.keyUsage: {
        const bits = AsnConvert.parse(value, KeyUsage).toNumber();
        summary.keyUsage = KEY_USAGE_NAMES.filter((name) => (bits & KeyUsageFlags[name]) !== 0);
        if (summary.keyUsage.length === 0) throw new TypeError('keyUsage extension has no bit set');
        break;
      }
      case OID.extKeyUsage: {
        const byOid = new Map(Object.entries(EXT_KEY_USAGE_OIDS).map(([name, oid]) => [oid as string, name]));
        summary.extKeyUsage = Array.from(
          AsnConvert.parse(value, ExtendedKeyUsage),
          (oid) => byOid.get(oid) ?? oid,
        );
        if (summary.extKeyUsage.length === 0) throw new TypeError('extKeyUsage extension lists no purpose');
        break;
      }
      case OID.subjectAltName:
        for (const name of AsnConvert.parse(value, SubjectAlternativeName)) {
          if (name.dNSName !== undefined) summary.dnsNames.push(name.dNSName);
          if (name.iPAddress !== undefined) summary.ipAddresses.push(name.iPAddress);
        }
        break;
      case OID.subjectKeyIdentifier:
        summary.ski = toHex(u8(AsnConvert.parse(value, SubjectKeyIdentifier).buffer));
        break;
      case OID.authorityKeyIdentifier: {
        const id = AsnConvert.parse(value, AuthorityKeyIdentifier).keyIdentifier;
        summary.aki = id === undefined ? undefined : toHex(u8(id.buffer));
        break;
      }
      default:
        if (ext.critical) summary.unknownCritical.push(ext.extnID);
    }
  }
  return summary;
}

function extension(oid: string, critical: boolean, value: unknown): Extension {
  return new Extension({ extnID: oid, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

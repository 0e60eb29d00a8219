import { AsnConvert } from '@peculiar/asn1-schema';
import { AttributeTypeAndValue, AttributeValue, Name, RelativeDistinguishedName } from '@peculiar/asn1-x509';
import { bytesEqual, toHex, u8 } from './der.ts';

/** Subject attributes keyferry writes, by their usual short names. */
export type DnAttributeName = 'C' | 'ST' | 'L' | 'O' | 'OU' | 'CN' | 'serialNumber';

/**
 * A subject to build. The object form is encoded in a fixed order (C, ST, L, O, OU, CN,
 * serialNumber — Go's pkix order, which fioctl's certificates have); the list form keeps the
 * order given.
 */
export type DnSpec =
  | Readonly<Partial<Record<DnAttributeName, string>>>
  | ReadonlyArray<readonly [DnAttributeName, string]>;

/** One attribute of a parsed name. `name` is the short name when keyferry knows the OID. */
export interface NameAttribute {
  readonly oid: string;
  readonly name: string | undefined;
  readonly value: string;
}

/** A parsed distinguished name: the exact DER, its RDNs in encoded order, and an RFC 4514 string. */
export interface DistinguishedName {
  readonly der: Uint8Array;
  readonly rdns: ReadonlyArray<ReadonlyArray<NameAttribute>>;
  /** RFC 4514 form (last RDN first), e.g. `CN=Factory-CA,OU=demo`. */
  readonly text: string;
  /** The first value of each known attribute, for reading a profile's fields. */
  readonly attributes: Readonly<Partial<Record<DnAttributeName, string>>>;
  /** The RFC 4514 text, so a name reads well in a template string or a log line. */
  toString(): string;
}

/** Attribute type OIDs (X.520) with their RFC 5280 upper bounds. */
export const DN_ATTRIBUTES: Readonly<
  Record<DnAttributeName, { oid: string; max: number; printable: boolean }>
> = {
  C: { oid: '2.5.4.6', max: 2, printable: true },
  ST: { oid: '2.5.4.8', max: 128, printable: false },
  L: { oid: '2.5.4.7', max: 128, printable: false },
  O: { oid: '2.5.4.10', max: 64, printable: false },
  OU: { oid: '2.5.4.11', max: 64, printable: false },
  CN: { oid: '2.5.4.3', max: 64, printable: false },
  serialNumber: { oid: '2.5.4.5', max: 64, printable: true },
};
const ORDER: readonly DnAttributeName[] = ['C', 'ST', 'L', 'O', 'OU', 'CN', 'serialNumber'];
const NAME_BY_OID = new Map<string, DnAttributeName>(
  ORDER.map((name) => [DN_ATTRIBUTES[name].oid, name] as const),
);
const EXTRA_NAMES = new Map<string, string>([
  ['0.9.2342.19200300.100.1.25', 'DC'],
  ['1.2.840.113549.1.9.1', 'emailAddress'],
]);
const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;

/**
 * The attribute list of a spec, validated: no empty value, RFC 5280 length bounds, and the
 * PrintableString character set for C and serialNumber (the X.520 type of both).
 */
function dnAttributes(spec: DnSpec): Array<readonly [DnAttributeName, string]> {
  const list: Array<readonly [DnAttributeName, string]> = Array.isArray(spec)
    ? [...(spec as ReadonlyArray<readonly [DnAttributeName, string]>)]
    : ORDER.flatMap((name) => {
        const value = (spec as Partial<Record<DnAttributeName, string>>)[name];
        return value === undefined ? [] : [[name, value] as const];
      });
  if (list.length === 0) throw new TypeError('a distinguished name needs at least one attribute');
  for (const [name, value] of list) {
    const rule = DN_ATTRIBUTES[name];
    if (rule === undefined) throw new TypeError(`unknown name attribute ${JSON.stringify(name)}`);
    if (typeof value !== 'string' || value.length === 0)
      throw new TypeError(`name attribute ${name} is empty`);
    if (value.length > rule.max) throw new TypeError(`name attribute ${name} is longer than ${rule.max}`);
    if (rule.printable && !PRINTABLE.test(value)) {
      throw new TypeError(`name attribute ${name} must use PrintableString characters`);
    }
  }
  return list;
}

/** The ASN.1 Name for a spec: one attribute per RDN, UTF8String except C and serialNumber. */
export function buildName(spec: DnSpec): Name {
  return new Name(
    dnAttributes(spec).map(([name, value]) => {
      const rule = DN_ATTRIBUTES[name];
      const attributeValue = new AttributeValue(
        rule.printable ? { printableString: value } : { utf8String: value },
      );
      return new RelativeDistinguishedName([
        new AttributeTypeAndValue({ type: rule.oid, value: attributeValue }),
      ]);
    }),
  );
}

/** DER of a Name for a spec. */
export function encodeName(spec: DnSpec): Uint8Array {
  return u8(AsnConvert.serialize(buildName(spec)));
}

/**
 * The ASN.1 Name for DER bytes, checked to encode back to exactly those bytes: an issuer name
 * copied into a certificate must match the issuer's subject byte for byte.
 */
export function nameFromDer(der: Uint8Array): Name {
  const name = AsnConvert.parse(der, Name);
  if (!bytesEqual(u8(AsnConvert.serialize(name)), der)) {
    throw new TypeError('the name does not re-encode to the same DER; it cannot be copied');
  }
  return name;
}

/** Reads a parsed Name (with its exact DER) into a {@link DistinguishedName}. */
export function describeName(name: Name, der: Uint8Array): DistinguishedName {
  // Array.from: the library's arrays are subclasses whose map() builds another ASN.1 object.
  const rdns = Array.from(name, (rdn) =>
    Array.from(rdn, (atv): RawAttribute => {
      // RFC 4514 §2.4: a value of a type without a string form is written as # and its BER hex.
      const raw = atv.value.anyValue;
      return raw === undefined
        ? { oid: atv.type, value: atv.value.toString(), hex: false }
        : { oid: atv.type, value: '#' + toHex(u8(raw)), hex: true };
    }),
  );
  return describeRdns(rdns, der);
}

/** One decoded attribute: a string value, or (`hex`) the `#`-prefixed hex of a non-string one. */
export interface RawAttribute {
  readonly oid: string;
  readonly value: string;
  readonly hex: boolean;
}

/** Builds a {@link DistinguishedName} from decoded RDNs (in encoded order) and the Name's DER. */
export function describeRdns(
  raw: ReadonlyArray<ReadonlyArray<RawAttribute>>,
  der: Uint8Array,
): DistinguishedName {
  const attributes: Partial<Record<DnAttributeName, string>> = {};
  const texts: string[] = [];
  const rdns = raw.map((rdn) => {
    const parts: string[] = [];
    const list = rdn.map(({ oid, value, hex }): NameAttribute => {
      const known = NAME_BY_OID.get(oid);
      const short = known ?? EXTRA_NAMES.get(oid);
      parts.push(`${short ?? oid}=${hex ? value : escapeRfc4514(value)}`);
      if (known !== undefined && attributes[known] === undefined) attributes[known] = value;
      return { oid, name: short, value };
    });
    texts.push(parts.join('+'));
    return list;
  });
  const text = texts.reverse().join(',');
  return { der, rdns, text, attributes, toString: () => text };
}

/** Parses DER bytes of a Name into a {@link DistinguishedName}. */
export function parseName(der: Uint8Array): DistinguishedName {
  return describeName(AsnConvert.parse(der, Name), der);
}

function escapeRfc4514(value: string): string {
  return value
    .replace(/[\\,+"<>;=]/g, (c) => '\\' + c)
    .replace(/^[ #]/, (c) => '\\' + c)
    .replace(/ $/, '\\ ');
}

import { parseCertificate } from '@keyferry/core';
import { custodyError } from './failures.ts';
import { type Handle, p11 } from './pkcs11js.ts';
import { describeSelector, type ObjectSelector, selectorTemplate, type TokenSession } from './session.ts';

/** The kinds of object a token holds, named for people rather than by CKO_* number. */
export type TokenObjectClass = 'private' | 'public' | 'certificate' | 'data' | 'secret' | 'other';

/** One object on a token as {@link Token.listObjects} reports it. */
export interface TokenObjectInfo {
  readonly class: TokenObjectClass;
  readonly label: string | undefined;
  /** CKA_ID as lowercase hex; empty when the object has none. */
  readonly id: string;
  /** For private and secret keys only. */
  readonly extractable?: boolean;
  readonly sensitive?: boolean;
}

const CLASS_NAMES = new Map<number, TokenObjectClass>([
  [p11.CKO_PRIVATE_KEY, 'private'],
  [p11.CKO_PUBLIC_KEY, 'public'],
  [p11.CKO_CERTIFICATE, 'certificate'],
  [p11.CKO_DATA, 'data'],
  [p11.CKO_SECRET_KEY, 'secret'],
]);

export function listObjects(session: TokenSession): TokenObjectInfo[] {
  return session.find([]).map((object) => {
    const cls = CLASS_NAMES.get(session.ulong(object, p11.CKA_CLASS) ?? -1) ?? 'other';
    const info: TokenObjectInfo = {
      class: cls,
      label: session.attribute(object, p11.CKA_LABEL)?.toString('utf8'),
      id: session.attribute(object, p11.CKA_ID)?.toString('hex') ?? '',
    };
    if (cls !== 'private' && cls !== 'secret') return info;
    const extractable = session.boolean(object, p11.CKA_EXTRACTABLE);
    const sensitive = session.boolean(object, p11.CKA_SENSITIVE);
    return {
      ...info,
      ...(extractable === undefined ? {} : { extractable }),
      ...(sensitive === undefined ? {} : { sensitive }),
    };
  });
}

/** The single object of a class that a selector picks; several is an error, none is undefined. */
export function findOne(
  session: TokenSession,
  objectClass: number,
  selector: ObjectSelector,
): Handle | undefined {
  const found = session.find(selectorTemplate(selector, objectClass));
  if (found.length > 1) {
    throw custodyError(
      `token '${session.tokenLabel}' holds ${found.length} objects of the same kind with ${describeSelector(selector)}; ` +
        'delete the duplicates so the right one is used',
      undefined,
      { token: session.tokenLabel },
    );
  }
  return found[0];
}

/** Stores a certificate under a label and id, replacing the certificates already there. */
export interface PutCertificateOptions {
  readonly label: string;
  readonly id: Uint8Array;
  /** The certificate, DER. */
  readonly der: Uint8Array;
}

export function putCertificate(session: TokenSession, options: PutCertificateOptions): void {
  // PKCS#11 wants the subject (required by SoftHSM), issuer and serial beside the DER.
  const certificate = parseCertificate(options.der);
  const previous = [
    ...session.find(selectorTemplate({ id: options.id }, p11.CKO_CERTIFICATE)),
    ...session.find(selectorTemplate({ label: options.label }, p11.CKO_CERTIFICATE)),
  ];
  // Create before destroying: if the token is full, the old certificate is still there.
  const created = session.create([
    { type: p11.CKA_CLASS, value: p11.CKO_CERTIFICATE },
    { type: p11.CKA_CERTIFICATE_TYPE, value: p11.CKC_X_509 },
    { type: p11.CKA_TOKEN, value: true },
    { type: p11.CKA_PRIVATE, value: false },
    { type: p11.CKA_LABEL, value: options.label },
    { type: p11.CKA_ID, value: Buffer.from(options.id) },
    { type: p11.CKA_SUBJECT, value: Buffer.from(certificate.subject.der) },
    { type: p11.CKA_ISSUER, value: Buffer.from(certificate.issuer.der) },
    { type: p11.CKA_SERIAL_NUMBER, value: derInteger(certificate.serialHex) },
    { type: p11.CKA_VALUE, value: Buffer.from(options.der) },
  ]);
  destroyAllBut(session, previous, created);
}

/** Stores an opaque value (CKO_DATA) under a label, replacing any value already there. */
export interface PutDataOptions {
  readonly label: string;
  readonly value: Uint8Array;
  /** Whether reading it needs a login. Default false: the SE UID it holds is no secret. */
  readonly private?: boolean;
}

export function putData(session: TokenSession, options: PutDataOptions): void {
  const previous = session.find(selectorTemplate({ label: options.label }, p11.CKO_DATA));
  const created = session.create([
    { type: p11.CKA_CLASS, value: p11.CKO_DATA },
    { type: p11.CKA_TOKEN, value: true },
    { type: p11.CKA_PRIVATE, value: options.private ?? false },
    { type: p11.CKA_LABEL, value: options.label },
    { type: p11.CKA_VALUE, value: Buffer.from(options.value) },
  ]);
  destroyAllBut(session, previous, created);
}

/** The CKA_VALUE of the one object of a class a selector picks, or undefined if there is none. */
export function readValue(
  session: TokenSession,
  objectClass: number,
  selector: ObjectSelector,
): Buffer | undefined {
  const object = findOne(session, objectClass, selector);
  return object === undefined ? undefined : session.attribute(object, p11.CKA_VALUE);
}

/** Destroys every object, of any class, that the selector picks; returns how many. */
export function deleteObjects(session: TokenSession, selector: ObjectSelector): number {
  const found = session.find(selectorTemplate(selector));
  for (const object of found) session.destroy(object);
  return found.length;
}

function destroyAllBut(session: TokenSession, objects: Handle[], keep: Handle): void {
  const seen = new Set<string>([keep.toString('hex')]);
  for (const object of objects) {
    const key = object.toString('hex');
    if (seen.has(key)) continue;
    seen.add(key);
    session.destroy(object);
  }
}

/** CKA_SERIAL_NUMBER is the DER INTEGER, tag and length included; the value is positive. */
function derInteger(hex: string): Buffer {
  let value = Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex');
  if ((value[0] ?? 0) & 0x80) value = Buffer.concat([Buffer.from([0]), value]);
  // Serials are at most 20 octets (RFC 5280), so the short length form always fits.
  return Buffer.concat([Buffer.from([0x02, value.length]), value]);
}

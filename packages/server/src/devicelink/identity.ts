import { createHash, X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import {
  canonicalP256Spki,
  type DeviceId,
  isKeyferryError,
  KeyferryError,
  parseCertificate,
  tryParseDeviceId,
  verifyChain,
  verifyIssuedByAnchor,
} from '@keyferry/core';
import type { TrustAnchors } from './trust-anchors.ts';

/** Who a verified vendor identity says the device is. */
export interface DeviceIdentity {
  readonly deviceId: DeviceId;
  readonly nc12: string;
  readonly fingerprint: string;
  /**
   * The identity key's SubjectPublicKeyInfo: no CSR may ask to certify it for another use.
   * Undefined when the caller authenticated with a device certificate (a renewal).
   */
  readonly publicKeySpki: Uint8Array | undefined;
}

/** At most this many certificates are taken from the client's chain. */
const MAX_PEER_CHAIN = 4;

/**
 * The client certificate of a connection, read from the TLS socket once: Node builds its
 * object forms anew on every call, and it cannot change on a connection (the listeners disable
 * renegotiation). Null when the client sent none.
 */
export interface PeerCertificate {
  /** The leaf as node:crypto reads it (subject, fingerprint256, verify). */
  x509: X509Certificate;
  /** The leaf and the intermediates the client sent, as DER, leaf first. */
  chain: Uint8Array[];
}

const peers = new WeakMap<TLSSocket, PeerCertificate | null>();

export function peerCertificate(socket: TLSSocket): PeerCertificate | null {
  let peer = peers.get(socket);
  if (peer === undefined) {
    const x509 = socket.getPeerX509Certificate?.();
    peer = x509 ? { x509, chain: chainOf(x509) } : null;
    peers.set(socket, peer);
  }
  return peer;
}

/** The client's certificate and the intermediates it sent, as DER, leaf first. */
export function peerChain(socket: TLSSocket): Uint8Array[] {
  return peerCertificate(socket)?.chain ?? [];
}

/**
 * The leaf and, through `issuerCertificate`, the certificates the client sent with it (Node
 * fills it from the chain of the handshake only). Not getPeerCertificate(true): it builds the
 * whole object form of each certificate (~0.13 ms) and adds issuers from the context's store.
 */
function chainOf(leaf: X509Certificate): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let cert: X509Certificate | undefined = leaf; cert && out.length < MAX_PEER_CHAIN; ) {
    const der = new Uint8Array(cert.raw);
    if (out.some((seen) => Buffer.from(seen).equals(der))) break;
    out.push(der);
    cert = cert.issuerCertificate;
  }
  return out;
}

/**
 * Identities verified on a TLS connection: a device sends manifest, enroll and report on one
 * connection, and its certificate cannot change on it (the listener disables renegotiation).
 * Each is kept with the end of its chain's validity (the earliest notAfter of the certificates
 * the device sent, in ms): a request after it verifies the chain again, which refuses it then,
 * so a kept-alive connection does not go on past the identity's expiry.
 */
const verifiedSockets = new WeakMap<TLSSocket, { identity: DeviceIdentity; until: number }>();

/** The earliest notAfter of the client's certificates (leaf first), in ms since the epoch. */
function chainExpiry(x509: X509Certificate, chain: readonly Uint8Array[]): number {
  let until = Date.parse(x509.validTo);
  for (const der of chain.slice(1)) until = Math.min(until, Date.parse(new X509Certificate(der).validTo));
  return Number.isNaN(until) ? 0 : until;
}

/** The identity of the device on `socket`, verified on its first request and kept for the rest. */
export function socketIdentity(
  socket: TLSSocket,
  anchors: TrustAnchors,
  claim: IdentityClaim,
  now = new Date(),
): DeviceIdentity {
  let verified = verifiedSockets.get(socket);
  if (!verified || now.getTime() > verified.until) {
    verifiedSockets.delete(socket);
    const peer = peerCertificate(socket);
    const identity = verifyIdentity(peer?.chain ?? [], anchors, claim, now, peer?.x509);
    // peer is set here: verifyIdentity refuses a connection without a certificate
    verified = { identity, until: peer ? chainExpiry(peer.x509, peer.chain) : 0 };
    verifiedSockets.set(socket, verified);
  }
  const { identity } = verified;
  claim.deviceId = identity.deviceId.decimal;
  claim.nc12 = identity.nc12;
  return identity;
}

/** What a refused identity looked like, for the audit log. */
export interface IdentityClaim {
  deviceId?: string;
  nc12?: string;
}

/**
 * Verifies the vendor identity a device presented (docs/device-link.md): the product is the 12NC in
 * the certificate's OU, the chain must verify (clientAuth, now) against that product's
 * anchors, and the UID is the CN (36 hex digits). `claim` is filled as far as it got.
 * `leafX509` is the leaf already read (the TLS socket's), else it is read from the DER.
 */
export function verifyIdentity(
  chain: readonly Uint8Array[],
  anchors: TrustAnchors,
  claim: IdentityClaim,
  now = new Date(),
  leafX509?: X509Certificate,
): DeviceIdentity {
  const [leaf, ...intermediates] = chain;
  if (leaf === undefined) {
    throw new KeyferryError(
      'unauthenticated',
      "no client certificate: connect with the secure element's vendor identity (key 0xF0000000, certificate 0xF0000001)",
    );
  }
  // Read the claim before trusting it, only to pick the anchors and to name the device in the log.
  const x509 = leafX509 ?? readLeaf(leaf);
  const subject = subjectOf(x509) ?? readSubject(leaf);
  const uid =
    subject.CN !== undefined && /^[0-9a-f]{36}$/i.test(subject.CN)
      ? tryParseDeviceId(`0x${subject.CN}`)
      : undefined;
  if (uid) claim.deviceId = uid.decimal;
  if (subject.OU === undefined || !/^[0-9]{12}$/.test(subject.OU)) {
    throw new KeyferryError(
      'untrusted_identity',
      'the identity certificate names no product: its OU must be the 12NC',
    );
  }
  claim.nc12 = subject.OU;
  if (!anchors.product(subject.OU)) {
    throw new KeyferryError(
      'unknown_product',
      `the identity certificate is for product ${subject.OU}, which this service does not know`,
    );
  }
  const nc12 = subject.OU;
  const attempt = (refresh: boolean) =>
    verifyChain(leaf, intermediates, anchors.anchors(nc12, refresh), now, { purpose: 'clientAuth' });
  // The SE05x shape (leaf under a vendor CA) is decided natively; anything else, and every
  // refusal with its reason, by the full verifier, after reading the anchor files again.
  const native =
    intermediates.length === 0 &&
    verifyIssuedByAnchor(x509, leaf, anchors.nativeAnchors(nc12), now, 'clientAuth');
  try {
    if (!native) {
      try {
        attempt(false);
      } catch {
        attempt(true);
      }
    }
  } catch (error) {
    const why = isKeyferryError(error) ? error.message : String(error);
    throw new KeyferryError(
      'untrusted_identity',
      `the identity certificate does not verify for product ${subject.OU}: ${why}`,
    );
  }
  if (!uid) {
    throw new KeyferryError('untrusted_identity', 'the identity certificate CN is not a UID (36 hex digits)');
  }
  return {
    deviceId: uid,
    nc12: subject.OU,
    fingerprint: createHash('sha256').update(leaf).digest('hex'),
    // canonical SPKI DER, as the CSR key check compares it
    publicKeySpki:
      canonicalP256Spki(leaf) ?? new Uint8Array(x509.publicKey.export({ format: 'der', type: 'spki' })),
  };
}

function readLeaf(der: Uint8Array): X509Certificate {
  try {
    return new X509Certificate(der);
  } catch {
    throw unreadable();
  }
}

/**
 * CN and OU from OpenSSL's one-attribute-a-line rendering of the subject; undefined when a
 * line is not plain `KEY=value` or an attribute repeats, which the full parser then reads.
 */
function subjectOf(x509: X509Certificate): { CN?: string | undefined; OU?: string | undefined } | undefined {
  const seen = new Map<string, string>();
  for (const line of x509.subject.split('\n')) {
    const at = line.indexOf('=');
    const key = line.slice(0, at);
    const value = line.slice(at + 1);
    if (at < 1 || seen.has(key) || /[\\+"]/.test(value)) return undefined;
    seen.set(key, value);
  }
  return { CN: seen.get('CN'), OU: seen.get('OU') };
}

const unreadable = () =>
  new KeyferryError('untrusted_identity', 'the client certificate is not a readable X.509 certificate');

function readSubject(der: Uint8Array): { CN?: string | undefined; OU?: string | undefined } {
  try {
    const cert = parseCertificate(der);
    return { CN: cert.subjectAttributes.CN, OU: cert.subjectAttributes.OU };
  } catch {
    throw unreadable();
  }
}

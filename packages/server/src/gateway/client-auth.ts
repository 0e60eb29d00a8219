import {
  fromPem,
  isKeyferryError,
  KeyferryError,
  type ParsedCertificate,
  serialToDecimal,
  splitPemBundle,
  verifyChain,
} from '@keyferry/core';
import type { Factory } from '../factories/factories.ts';
import { certificateStatus } from '../revocation/certificate-status.ts';
import type { Db } from '../storage/database.ts';

/** A client certificate that chains to the factory's ca-crt and names the factory. */
export interface VerifiedClient {
  factoryId: number;
  leaf: ParsedCertificate;
  /** The device CA of ca-crt it chains to. */
  issuer: ParsedCertificate;
  /** True when its issuer is a keyferry-held intermediate CA (the current certificate of one). */
  keyferryIssuer: boolean;
}

/**
 * Checks a gateway client's certificate chain (leaf first, as sent) for `factory`: it must
 * chain (clientAuth, valid now) to an entry of the factory's `ca-crt` bundle, be a leaf with
 * a CN, and its OU must name this factory. Done in the service rather than by OpenSSL so each
 * refusal is a precise 403 problem; a certificate that does not pass never reaches a handler.
 */
export async function verifyClientChain(
  db: Db,
  factory: Factory,
  chain: readonly Uint8Array[],
  now = new Date(),
): Promise<VerifiedClient> {
  const [leaf, ...intermediates] = chain;
  if (leaf === undefined) {
    throw new KeyferryError(
      'client_certificate_required',
      'no client certificate: the device gateway needs the device certificate (PKCS#11 object SE_83000043) and its key',
    );
  }
  const pki = await db
    .selectFrom('factory_pki')
    .select(['ca_crt', 'revoked_ca_crt'])
    .where('factory_id', '=', factory.id)
    .executeTakeFirst();
  const anchors = pki?.ca_crt ? splitPemBundle(pki.ca_crt) : [];
  if (anchors.length === 0) {
    throw new KeyferryError(
      'untrusted_client_certificate',
      `factory ${factory.name} trusts no device CA yet (empty ca-crt): run keyferry el2g config-device-gateway`,
    );
  }
  let path: ParsedCertificate[];
  try {
    path = verifyChain(leaf, intermediates, anchors, now, { purpose: 'clientAuth' });
  } catch (error) {
    const revoked = revokedIssuer(leaf, intermediates, pki?.revoked_ca_crt ?? null, now);
    if (revoked) throw caRevoked(serialToDecimal(revoked.serialHex));
    const why = isKeyferryError(error) ? error.message : String(error);
    throw new KeyferryError(
      'untrusted_client_certificate',
      `the client certificate does not chain to a device CA of factory ${factory.name} (ca-crt): ${why}`,
    );
  }
  const cert = path[0]!;
  const issuer = path[1];
  if (cert.isCa || issuer === undefined) {
    throw new KeyferryError(
      'untrusted_client_certificate',
      'the client certificate is a CA certificate, not a device certificate',
    );
  }
  const ou = cert.subjectAttributes.OU;
  if (ou !== factory.name) {
    throw new KeyferryError(
      'wrong_factory',
      `the client certificate names factory ${JSON.stringify(ou ?? '')} in its OU, not ${factory.name}`,
    );
  }
  if (!cert.subjectAttributes.CN) {
    throw new KeyferryError(
      'untrusted_client_certificate',
      'the client certificate has no CN to name the device by',
    );
  }
  return {
    factoryId: factory.id,
    leaf: cert,
    issuer,
    keyferryIssuer: await isKeyferryCa(db, factory.id, issuer.der),
  };
}

/**
 * Refuses a certificate whose device CA the factory stopped trusting after the connection's
 * chain was verified: revoked (`ca-revoke-crl`) or dropped from ca-crt. A disabled CA (on hold,
 * `disabled-ca-serials`) keeps serving devices the gateway already knows, but registers no new
 * one, as fioctl's disable-device-ca describes. Checked per request, like revocation.
 */
export async function assertDeviceCaTrusted(db: Db, client: VerifiedClient): Promise<void> {
  const pki = await db
    .selectFrom('factory_pki')
    .select(['ca_crt', 'disabled_ca_serials', 'revoked_ca_crt'])
    .where('factory_id', '=', client.factoryId)
    .executeTakeFirstOrThrow();
  const serial = serialToDecimal(client.issuer.serialHex);
  const anchors = pki.ca_crt ? splitPemBundle(pki.ca_crt) : [];
  if (!anchors.some((der) => Buffer.from(der).equals(client.issuer.der))) {
    const revoked = pki.revoked_ca_crt ? splitPemBundle(pki.revoked_ca_crt) : [];
    if (revoked.some((der) => Buffer.from(der).equals(client.issuer.der))) throw caRevoked(serial);
    throw new KeyferryError(
      'untrusted_client_certificate',
      `the device CA of this certificate (serial ${serial}) is no longer in the factory's ca-crt`,
    );
  }
  if (!(JSON.parse(pki.disabled_ca_serials) as string[]).includes(serial)) return;
  const known = await db
    .selectFrom('gateway_devices')
    .select('id')
    .where('factory_id', '=', client.factoryId)
    .where('name', '=', client.leaf.subjectAttributes.CN ?? '')
    .executeTakeFirst();
  if (!known) {
    throw new KeyferryError(
      'untrusted_client_certificate',
      `device CA serial ${serial} is disabled: it registers no new devices (keyferry keys ca show lists disabled serials)`,
    );
  }
}

/** The revoked device CA a chain that no longer verifies would have chained to, if any. */
function revokedIssuer(
  leaf: Uint8Array,
  intermediates: readonly Uint8Array[],
  revokedPem: string | null,
  now: Date,
): ParsedCertificate | undefined {
  if (!revokedPem) return undefined;
  try {
    return verifyChain(leaf, intermediates, splitPemBundle(revokedPem), now, { purpose: 'clientAuth' })[1];
  } catch {
    return undefined;
  }
}

function caRevoked(serial: string): KeyferryError {
  return new KeyferryError(
    'certificate_revoked',
    `the device CA of this certificate (serial ${serial}) was revoked by the factory root; the device needs a certificate from a trusted device CA`,
  );
}

/**
 * Refuses a connection's verified certificate, or its device CA, once outside its validity: the
 * chain is verified once per TLS connection, and a kept-alive connection would otherwise go on
 * serving a certificate past its notAfter. Checked per request, like revocation.
 */
export function assertStillValid(client: VerifiedClient, now = new Date()): void {
  for (const [what, cert] of [
    ['client certificate', client.leaf],
    ['device CA certificate', client.issuer],
  ] as const) {
    if (now < cert.notBefore || now > cert.notAfter) {
      throw new KeyferryError(
        'untrusted_client_certificate',
        `the ${what} (serial ${cert.serialHex}) is valid from ${cert.notBefore.toISOString()} to ${cert.notAfter.toISOString()}, not now: the device must renew its certificate (keyferry-agent renew)`,
      );
    }
  }
}

/**
 * Refuses a certificate revoked in the data the CRLs are built from (allow-list delete,
 * rotation). A certificate of a keyferry-held CA that keyferry never issued is refused too:
 * only custody can sign with that key, so such a certificate means something is wrong.
 * Certificates of a CA in ca-crt that keyferry does not hold have no revocation data here.
 * Checked per request, so a revocation also stops a kept-alive connection.
 */
export async function assertNotRevoked(db: Db, client: VerifiedClient): Promise<void> {
  const status = await certificateStatus(db, client.factoryId, client.leaf);
  if (status.state === 'unknown' && !client.keyferryIssuer) return;
  if (status.state === 'revoked') {
    throw new KeyferryError(
      'certificate_revoked',
      `certificate ${client.leaf.serialHex} was revoked at ${status.at}${status.reason ? ` (${status.reason})` : ''}; the device must provision a new one`,
    );
  }
  if (status.state === 'unknown') {
    throw new KeyferryError(
      'untrusted_client_certificate',
      `certificate ${client.leaf.serialHex} is not one this service issued`,
    );
  }
}

async function isKeyferryCa(db: Db, factoryId: number, issuerDer: Uint8Array): Promise<boolean> {
  const cas = await db
    .selectFrom('intermediate_cas')
    .select(['id', 'certificate'])
    .where('factory_id', '=', factoryId)
    .execute();
  for (const ca of cas) {
    if (Buffer.from(fromPem(ca.certificate, 'CERTIFICATE')).equals(issuerDer)) return true;
  }
  return false;
}

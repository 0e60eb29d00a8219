import {
  fromPem,
  isKeyferryError,
  KeyferryError,
  type ParsedCertificate,
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
    .select(['ca_crt'])
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
    keyferryIssuer: await isKeyferryCa(db, factory.id, issuer.der),
  };
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

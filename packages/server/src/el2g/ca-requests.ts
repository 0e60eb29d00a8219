import {
  createCsr,
  fromPem,
  KeyferryError,
  type ParsedCertificate,
  parseCertificate,
  parseCsr,
  publicKeysEqual,
  splitPemBundle,
  toPem,
  verifyChain,
} from '@keyferry/core';
import type { Factory } from '../factories/factories.ts';
import { custodyKeyRow, discardingKeysOnFailure, type KeyCustody } from '../keys/custody.ts';
import type { Db } from '../storage/database.ts';
import type { CaRequestsTable } from '../storage/tables.ts';
import { audit, type ChangeContext } from './secure-objects.ts';

/**
 * The pending CSR of `caName`, or a new CA key in custody and a CSR for it, waiting for the
 * factory root's signature. There is at most one pending request per factory and CA (a unique
 * index): repeating the POST answers the same id and CSR, so retries never pile up keys. The
 * key row and the request commit together, so a failure leaves neither.
 */
export async function requestCaKey(
  db: Db,
  custody: KeyCustody,
  factory: Factory,
  caName: string,
  change: ChangeContext,
  now = new Date(),
): Promise<{ id: number; csrPem: string; created: boolean }> {
  const pending = await pendingCaRequest(db, factory.id, caName);
  if (pending) return { ...pending, created: false };
  try {
    return await discardingKeysOnFailure(db, custody, async (custody) => {
      const key = await custody.generate(`intermediate-ca:${factory.name}:${caName}`);
      return db.transaction().execute(async (trx) => {
        const row = custodyKeyRow(key, now);
        await trx.insertInto('custody_keys').values(row).execute();
        const signer = await custody.signer(row);
        const csr = await createCsr({ subject: { CN: caName, OU: factory.name }, signer });
        const csrPem = toPem(csr, 'CERTIFICATE REQUEST');
        const request = await trx
          .insertInto('ca_requests')
          .values({
            factory_id: factory.id,
            ca_name: caName,
            key_ref: key.id,
            csr: csrPem,
            created_at: now.toISOString(),
            completed_at: null,
          })
          .returning('id')
          .executeTakeFirstOrThrow();
        await audit(
          trx,
          factory.id,
          change,
          'ca-request.create',
          `intermediate-ca:${caName}`,
          { request: request.id, keyRef: key.id },
          now,
        );
        return { id: request.id, csrPem, created: true };
      });
    });
  } catch (error) {
    // Two first POSTs at once: the one that lost the unique index answers the winner's request
    // (its own key, never stored, is off the token by now).
    const winner =
      error instanceof KeyferryError ? undefined : await pendingCaRequest(db, factory.id, caName);
    if (winner) return { ...winner, created: false };
    throw error;
  }
}

async function pendingCaRequest(
  db: Db,
  factoryId: number,
  caName: string,
): Promise<{ id: number; csrPem: string } | undefined> {
  const row = await db
    .selectFrom('ca_requests')
    .select(['id', 'csr'])
    .where('factory_id', '=', factoryId)
    .where('ca_name', '=', caName)
    .where('completed_at', 'is', null)
    .executeTakeFirst();
  return row && { id: row.id, csrPem: row.csr };
}

/** The open request `id` of this factory for `caName`, locked in the caller's transaction. */
export async function openCaRequest(
  db: Db,
  factoryId: number,
  id: number,
  caName: string,
): Promise<Omit<CaRequestsTable, 'id'> & { id: number }> {
  const row = await db
    .selectFrom('ca_requests')
    .selectAll()
    .where('factory_id', '=', factoryId)
    .where('id', '=', id)
    .where('ca_name', '=', caName)
    .executeTakeFirst();
  if (!row) {
    throw new KeyferryError(
      'not_found',
      `no ${caName} CSR with id ${id}: POST first and send back the id it answered`,
    );
  }
  if (row.completed_at !== null) {
    throw new KeyferryError(
      'conflict',
      `CSR ${id} was already answered at ${row.completed_at}: POST for a new CSR to replace the CA`,
    );
  }
  return row;
}

/**
 * Checks the root's answer to a CA request: `root-ca` is the factory's own root, the signed
 * certificate carries the CSR's key, is a CA allowed to sign leaves only (pathlen 0,
 * keyCertSign), is valid now and chains to that root. Returns the parsed certificate.
 */
export async function checkSignedCa(
  db: Db,
  factoryId: number,
  request: Pick<CaRequestsTable, 'csr'>,
  answer: { rootCa: string; signedCert: string },
  now: Date,
): Promise<ParsedCertificate> {
  const pki = await db
    .selectFrom('factory_pki')
    .select('root_crt')
    .where('factory_id', '=', factoryId)
    .executeTakeFirst();
  if (!pki?.root_crt) {
    throw new KeyferryError(
      'pki_missing',
      'the factory has no root CA yet: run keyferry keys ca create <pki-dir> first',
    );
  }
  const factoryRoot = fromPem(pki.root_crt, 'CERTIFICATE');
  const sentRoot = single('root-ca', answer.rootCa);
  if (Buffer.compare(Buffer.from(sentRoot), Buffer.from(factoryRoot)) !== 0) {
    throw new KeyferryError(
      'untrusted_chain',
      "root-ca is not this factory's root CA: sign with the PKI dir keys ca create made for this factory",
    );
  }
  const cert = parseCertificate(single('signed-cert', answer.signedCert));
  const csr = parseCsr(fromPem(request.csr, 'CERTIFICATE REQUEST'));
  if (!publicKeysEqual(cert.spki, csr.publicKeySpki)) {
    throw new KeyferryError(
      'certificate_mismatch',
      'signed-cert does not carry the public key of the CSR it answers: sign the CSR the POST returned',
    );
  }
  if (!cert.isCa || cert.pathLen !== 0) {
    throw new KeyferryError(
      'certificate_invalid',
      `signed-cert must be a CA certificate with pathlen 0 (it is ${cert.isCa ? `a CA with pathlen ${cert.pathLen ?? 'unlimited'}` : 'not a CA'})`,
    );
  }
  if (cert.keyUsage.length > 0 && !cert.keyUsage.includes('keyCertSign')) {
    throw new KeyferryError(
      'certificate_invalid',
      'signed-cert may not sign certificates (keyUsage lacks keyCertSign)',
    );
  }
  verifyChain(cert.der, [], [factoryRoot], now);
  return cert;
}

function single(field: string, pem: string): Uint8Array {
  let ders: Uint8Array[];
  try {
    ders = splitPemBundle(pem);
  } catch (err) {
    throw new KeyferryError('certificate_invalid', `${field} is not PEM: ${(err as Error).message}`);
  }
  const first = ders[0];
  if (ders.length !== 1 || !first) {
    throw new KeyferryError(
      'certificate_invalid',
      `${field} must hold exactly one PEM certificate (it holds ${ders.length})`,
    );
  }
  try {
    parseCertificate(first);
  } catch (err) {
    throw new KeyferryError(
      'certificate_invalid',
      `${field} is not an X.509 certificate: ${(err as Error).message}`,
    );
  }
  return first;
}

export function certificatePem(cert: ParsedCertificate): string {
  return toPem(cert.der, 'CERTIFICATE');
}

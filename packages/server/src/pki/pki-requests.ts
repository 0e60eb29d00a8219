import { createCsr, KeyferryError, toPem } from '@keyferry/core';
import { recordAudit } from '../audit/audit-log.ts';
import type { Factory } from '../factories/factories.ts';
import {
  custodyKeyRow,
  discardingKeysOnFailure,
  type KeyCustody,
  type TlsKeyStore,
} from '../keys/custody.ts';
import { asOneWrite, type Db, transactionForFactory } from '../storage/database.ts';
import type { FactoryPkiTable } from '../storage/tables.ts';
import { newGatewayTlsKey } from './factory-pki.ts';

/** POST certs/ as fioctl sends it (`CaCreateOptions`). */
export interface PkiCsrRequest {
  'first-time-init'?: boolean | undefined;
  'ca-csr'?: boolean | undefined;
  'tls-csr'?: boolean | undefined;
  'est-tls-csr'?: boolean | undefined;
}

/** fioctl's `CaCsrs`: only the CSRs asked for are present. */
export interface PkiCsrs {
  'tls-csr'?: string;
  'ca-csr'?: string;
}

/** Subject CN of online device CAs (fioctl's CA subject comes from the service's CSR). */
export const ONLINE_CA_CN = 'online-ca';

interface Context {
  actor: string;
  correlationId: string;
  now?: Date;
}

/**
 * POST certs/: the CSRs the root is to sign. `first-time-init` (keys ca create) needs a factory
 * without a root and answers the gateway TLS CSR made with the factory; without it (rotate-tls,
 * add-device-ca) the root must exist and `tls-csr` makes a new gateway key, kept pending until
 * its certificate comes back. `ca-csr` makes an online device CA key. An unanswered CSR is
 * answered again rather than a second key made, so retries do not pile up keys.
 */
export async function requestPkiCsrs(
  db: Db,
  keys: { custody: KeyCustody; tlsKeys: TlsKeyStore },
  factory: Factory,
  domain: string,
  request: PkiCsrRequest,
  context: Context,
): Promise<PkiCsrs> {
  const now = context.now ?? new Date();
  if (request['est-tls-csr']) {
    throw new KeyferryError(
      'invalid_request',
      'keyferry runs no per-factory EST server (fioctl keys est): devices renew over the device-link (docs/device-link.md); send "est-tls-csr": false',
    );
  }
  if (!request['tls-csr'] && !request['ca-csr']) {
    throw new KeyferryError(
      'invalid_request',
      'nothing to make: ask for "tls-csr": true and/or "ca-csr": true',
    );
  }
  // one factory's CSR requests one after the other: an unanswered CSR is then answered again
  return discardingKeysOnFailure(db, keys.custody, (custody) =>
    transactionForFactory(db, factory.id, (trx) =>
      makeCsrs(trx, { custody, tlsKeys: keys.tlsKeys }, factory, domain, request, now, context),
    ),
  );
}

async function makeCsrs(
  db: Db,
  keys: { custody: KeyCustody; tlsKeys: TlsKeyStore },
  factory: Factory,
  domain: string,
  request: PkiCsrRequest,
  now: Date,
  context: Context,
): Promise<PkiCsrs> {
  const pki = await db
    .selectFrom('factory_pki')
    .selectAll()
    .where('factory_id', '=', factory.id)
    .executeTakeFirstOrThrow();
  if (request['first-time-init'] && pki.root_crt) {
    throw new KeyferryError(
      'pki_exists',
      `factory ${factory.name} already has a root CA (set at ${pki.created_at ?? pki.updated_at}): keys ca create (first-time-init) runs once per factory; use keys ca rotate-tls or add-device-ca`,
    );
  }
  if (!request['first-time-init'] && !pki.root_crt) {
    throw new KeyferryError(
      'pki_missing',
      `factory ${factory.name} has no factory PKI yet: run keyferry keys ca create <pki-dir> first (POST with "first-time-init": true)`,
    );
  }
  const answer: PkiCsrs = {};
  if (request['tls-csr']) answer['tls-csr'] = await tlsCsr(db, keys.tlsKeys, factory, domain, pki, now);
  if (request['ca-csr']) answer['ca-csr'] = await onlineCaCsr(db, keys.custody, factory, now);
  await recordAudit(
    db,
    {
      factoryId: factory.id,
      actor: context.actor,
      action: 'pki.csr',
      object: 'certs',
      detail: { asked: Object.keys(answer), firstTimeInit: Boolean(request['first-time-init']) },
      correlationId: context.correlationId,
    },
    now,
  );
  return answer;
}

async function tlsCsr(
  db: Db,
  tlsKeys: TlsKeyStore,
  factory: Factory,
  domain: string,
  pki: Pick<
    FactoryPkiTable,
    'tls_key_ref' | 'tls_csr' | 'tls_crt' | 'pending_tls_key_ref' | 'pending_tls_csr'
  >,
  now: Date,
): Promise<string> {
  // An unanswered CSR is answered again, unless its key is one the gateway cannot present: a
  // keyferry before the TLS key store made gateway keys on the HSM with pkcs11 custody.
  if (!pki.tls_crt) {
    if (await inTlsKeyStore(db, tlsKeys, pki.tls_key_ref)) return pki.tls_csr;
  } else if (pki.pending_tls_csr && pki.pending_tls_key_ref) {
    if (await inTlsKeyStore(db, tlsKeys, pki.pending_tls_key_ref)) return pki.pending_tls_csr;
  }
  const { row, csrPem } = await newGatewayTlsKey(tlsKeys, factory, domain, now);
  // Before the first tls-crt the new key replaces the waiting one; after it, it waits for its
  // certificate (PATCH tls-crt makes it the key in use).
  const columns = pki.tls_crt
    ? { pending_tls_key_ref: row.id, pending_tls_csr: csrPem }
    : { tls_key_ref: row.id, tls_csr: csrPem };
  await asOneWrite(db, async (trx) => {
    await trx.insertInto('custody_keys').values(row).execute();
    await trx.updateTable('factory_pki').set(columns).where('factory_id', '=', factory.id).execute();
  });
  return csrPem;
}

async function inTlsKeyStore(db: Db, tlsKeys: TlsKeyStore, keyId: string): Promise<boolean> {
  const row = await db
    .selectFrom('custody_keys')
    .select('backend')
    .where('id', '=', keyId)
    .executeTakeFirst();
  return row?.backend === tlsKeys.backend;
}

async function onlineCaCsr(db: Db, custody: KeyCustody, factory: Factory, now: Date): Promise<string> {
  const open = await db
    .selectFrom('online_cas')
    .select('csr')
    .where('factory_id', '=', factory.id)
    .where('certificate', 'is', null)
    .orderBy('id', 'desc')
    .executeTakeFirst();
  if (open) return open.csr;
  const key = await custody.generate(`online-ca:${factory.name}`);
  const row = custodyKeyRow(key, now);
  const csr = toPem(
    await createCsr({ subject: { CN: ONLINE_CA_CN, OU: factory.name }, signer: await custody.signer(row) }),
    'CERTIFICATE REQUEST',
  );
  await asOneWrite(db, async (trx) => {
    await trx.insertInto('custody_keys').values(row).execute();
    await trx
      .insertInto('online_cas')
      .values({
        factory_id: factory.id,
        key_ref: key.id,
        csr,
        certificate: null,
        created_at: now.toISOString(),
        signed_at: null,
      })
      .execute();
  });
  return csr;
}

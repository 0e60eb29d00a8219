import {
  createCsr,
  fromPem,
  KeyferryError,
  parseCertificate,
  parseCsr,
  publicKeysEqual,
  splitPemBundle,
  toPem,
  verifyChain,
} from '@keyferry/core';
import type { Updateable } from 'kysely';
import { recordAudit } from '../audit/audit-log.ts';
import type { Factory } from '../factories/factories.ts';
import { custodyKeyRow, gatewayTlsPurpose, type TlsKeyStore } from '../keys/custody.ts';
import type { Db } from '../storage/database.ts';
import type { CustodyKeysTable, FactoryPkiTable } from '../storage/tables.ts';
import { applyCaRevokeCrl } from './device-ca-revocation.ts';
import { assertNoSilentRemoval, completeOnlineCas } from './device-cas.ts';

/** fioctl's `ChangeMeta`: who set the PKI up and who changed it last. */
export interface ChangeMeta {
  'created-at': string;
  'created-by': string;
  'updated-at': string;
  'updated-by': string;
}

/** The factory PKI as the API shows it (fioctl's `CaCerts` field names, plus `tls-csr`). */
export interface FactoryPkiView {
  'root-crt': string;
  'tls-crt': string;
  'ca-crt': string;
  'ca-revoke-crl': string;
  'disabled-ca-serials': string[];
  /** The CSR of the gateway TLS key in use (keyferry's addition). */
  'tls-csr': string;
  'change-meta': ChangeMeta;
}

export interface FactoryPkiPatch {
  'root-crt'?: string | undefined;
  'tls-crt'?: string | undefined;
  'ca-crt'?: string | undefined;
  'ca-revoke-crl'?: string | undefined;
  'est-tls-crt'?: string | undefined;
  /** fioctl sends its (client-side, usually empty) ChangeMeta with every PATCH. */
  'change-meta'?: Record<string, string> | undefined;
  /** The operator means a ca-crt that removes device CAs (issue: never silently). */
  'remove-device-cas'?: boolean | undefined;
}

/** Host name the device gateway answers to for this factory. */
export function gatewayHostname(factory: Factory, domain: string): string {
  return `${factory.repoId}.ota-lite.${domain}`;
}

/**
 * A new device gateway TLS key in the TLS key store (never on an HSM: Node's TLS server needs
 * the key itself) and its CSR. The caller stores the row with whatever points at it.
 */
export async function newGatewayTlsKey(
  tlsKeys: TlsKeyStore,
  factory: Factory,
  domain: string,
  now: Date,
): Promise<{ row: CustodyKeysTable; csrPem: string }> {
  const key = await tlsKeys.generate(gatewayTlsPurpose(factory.name));
  const row = custodyKeyRow(key, now);
  const host = gatewayHostname(factory, domain);
  const csr = await createCsr({
    subject: { CN: host, OU: factory.name },
    dnsNames: [host],
    signer: await tlsKeys.signer(row),
  });
  return { row, csrPem: toPem(csr, 'CERTIFICATE REQUEST') };
}

/**
 * Makes the device gateway's TLS key and its CSR. Runs in the transaction that creates the
 * factory, so a factory never exists without it.
 */
export async function setupFactoryPki(
  db: Db,
  tlsKeys: TlsKeyStore,
  factory: Factory,
  domain: string,
  now = new Date(),
): Promise<void> {
  const { row, csrPem } = await newGatewayTlsKey(tlsKeys, factory, domain, now);
  await db.insertInto('custody_keys').values(row).execute();
  await db
    .insertInto('factory_pki')
    .values({
      factory_id: factory.id,
      tls_key_ref: row.id,
      tls_csr: csrPem,
      root_crt: null,
      tls_crt: null,
      ca_crt: null,
      updated_at: now.toISOString(),
      updated_by: null,
    })
    .execute();
}

/** The factory PKI; `configured` is false until a root CA is set (GET certs/ then answers 206). */
export async function getFactoryPki(
  db: Db,
  factoryId: number,
): Promise<{ configured: boolean; view: FactoryPkiView }> {
  const row = await db
    .selectFrom('factory_pki')
    .selectAll()
    .where('factory_id', '=', factoryId)
    .executeTakeFirst();
  if (!row) throw new KeyferryError('internal', `factory ${factoryId} has no PKI row`);
  return {
    configured: row.root_crt !== null,
    view: {
      'root-crt': row.root_crt ?? '',
      'tls-crt': row.tls_crt ?? '',
      'ca-crt': row.ca_crt ?? '',
      'ca-revoke-crl': row.ca_revoke_crl ?? '',
      'disabled-ca-serials': JSON.parse(row.disabled_ca_serials) as string[],
      'tls-csr': row.tls_csr,
      'change-meta': {
        'created-at': row.created_at ?? '',
        'created-by': row.created_by ?? '',
        'updated-at': row.updated_at,
        'updated-by': row.updated_by ?? '',
      },
    },
  };
}

/**
 * Applies a PATCH of the factory PKI after checking every part against the others: the root
 * is a self-signed CA set once, `tls-crt` carries the service's gateway TLS key (the one in
 * use, or the one rotate-tls made) and chains to the root, every `ca-crt` entry is a CA under
 * the root and the bundle drops no device CA silently, `ca-revoke-crl` is signed by the root.
 * All or nothing: a refusal leaves the database as it was.
 */
export async function updateFactoryPki(
  db: Db,
  factory: Factory,
  patch: FactoryPkiPatch,
  context: { actor: string; correlationId: string; now?: Date },
): Promise<FactoryPkiView> {
  const now = context.now ?? new Date();
  if (patch['est-tls-crt'] !== undefined && patch['est-tls-crt'] !== '') {
    throw new KeyferryError(
      'invalid_request',
      'keyferry runs no per-factory EST server (fioctl keys est): devices renew over the device-link (docs/device-link.md); leave est-tls-crt out',
    );
  }
  return db.transaction().execute(async (trx) => {
    const row = await trx
      .selectFrom('factory_pki')
      .selectAll()
      .where('factory_id', '=', factory.id)
      .executeTakeFirst();
    if (!row) throw new KeyferryError('internal', `factory ${factory.name} has no PKI row`);
    const rootPem = patch['root-crt'] ?? row.root_crt;
    if (
      patch['root-crt'] !== undefined &&
      row.root_crt &&
      normalize(row.root_crt) !== normalize(patch['root-crt'])
    ) {
      throw new KeyferryError(
        'pki_exists',
        `factory ${factory.name} already has a root CA; it cannot be replaced through this API`,
      );
    }
    if (!rootPem) {
      throw new KeyferryError(
        'pki_missing',
        `factory ${factory.name} has no root CA yet: send root-crt with tls-crt (keyferry keys ca create does this)`,
      );
    }
    const root = parseField('root-crt', rootPem)[0] as Uint8Array;
    const rootInfo = parseCertificate(root);
    if (!rootInfo.isCa) throw new KeyferryError('certificate_invalid', 'root-crt is not a CA certificate');
    verifyChain(root, [], [root], now);

    const updates: Updateable<FactoryPkiTable> = { updated_at: now.toISOString(), updated_by: context.actor };
    if (!row.root_crt) {
      updates.root_crt = normalize(rootPem);
      updates.created_at = now.toISOString();
      updates.created_by = context.actor;
    }
    if (patch['tls-crt'] !== undefined) Object.assign(updates, checkTlsCrt(row, patch['tls-crt'], root, now));

    let bundle = row.ca_crt ? splitPemBundle(row.ca_crt) : [];
    let revoked = row.revoked_ca_crt ? splitPemBundle(row.revoked_ca_crt) : [];
    let disabled = JSON.parse(row.disabled_ca_serials) as string[];
    if (patch['ca-crt'] !== undefined) {
      const next = patch['ca-crt'].trim() === '' ? [] : parseField('ca-crt', patch['ca-crt']);
      const cas = next.map((ca, i) => {
        const cert = parseCertificate(ca);
        if (!cert.isCa) {
          throw new KeyferryError(
            'certificate_invalid',
            `ca-crt certificate #${i + 1} is not a CA certificate`,
          );
        }
        verifyChain(ca, [], [root], now);
        return cert;
      });
      if (!patch['remove-device-cas']) await assertNoSilentRemoval(trx, factory.id, bundle, next);
      await completeOnlineCas(trx, factory.id, cas, now);
      // A revoked CA sent again is trusted again (fioctl: "re-add it with keys ca update").
      revoked = revoked.filter((r) => !next.some((n) => Buffer.from(n).equals(r)));
      bundle = next;
    }
    if (patch['ca-revoke-crl'] !== undefined) {
      const applied = applyCaRevokeCrl(rootPem, patch['ca-revoke-crl'], { bundle, disabled, revoked }, now);
      ({ bundle, disabled, revoked } = applied);
      updates.ca_revoke_crl = applied.crlPem;
    }
    if (patch['ca-crt'] !== undefined || patch['ca-revoke-crl'] !== undefined) {
      updates.ca_crt = pemBundle(bundle);
      updates.revoked_ca_crt = pemBundle(revoked);
      updates.disabled_ca_serials = JSON.stringify(disabled);
    }
    await trx.updateTable('factory_pki').set(updates).where('factory_id', '=', factory.id).execute();
    const fields = Object.keys(patch).filter(
      (k) => k !== 'change-meta' && patch[k as keyof FactoryPkiPatch] !== undefined,
    );
    const sentMeta = Object.fromEntries(
      Object.entries(patch['change-meta'] ?? {}).filter(([, v]) => v !== ''),
    );
    await recordAudit(
      trx,
      {
        factoryId: factory.id,
        actor: context.actor,
        action: 'pki.update',
        object: 'certs',
        detail: {
          fields,
          ...(Object.keys(sentMeta).length > 0 ? { changeMeta: sentMeta } : {}),
          ...(updates.ca_crt !== undefined
            ? { deviceCas: bundle.length, revoked: revoked.length, disabled }
            : {}),
        },
        correlationId: context.correlationId,
      },
      now,
    );
    return (await getFactoryPki(trx, factory.id)).view;
  });
}

/**
 * A tls-crt for the key in use (a re-signed certificate) or for the pending key rotate-tls
 * made, which then becomes the key in use. Returns the columns to set.
 */
function checkTlsCrt(
  row: Pick<FactoryPkiTable, 'tls_csr' | 'pending_tls_csr' | 'pending_tls_key_ref'>,
  pem: string,
  root: Uint8Array,
  now: Date,
): Updateable<FactoryPkiTable> {
  const tls = parseField('tls-crt', pem)[0] as Uint8Array;
  const spki = parseCertificate(tls).spki;
  const keyOf = (csrPem: string) => parseCsr(fromPem(csrPem, 'CERTIFICATE REQUEST')).publicKeySpki;
  const forPending = row.pending_tls_csr !== null && publicKeysEqual(spki, keyOf(row.pending_tls_csr));
  if (!forPending && !publicKeysEqual(spki, keyOf(row.tls_csr))) {
    throw new KeyferryError(
      'certificate_mismatch',
      'tls-crt does not carry the public key of the service TLS CSR: sign the tls-csr POST certs/ answered',
    );
  }
  verifyChain(tls, [], [root], now);
  const updates: Updateable<FactoryPkiTable> = { tls_crt: normalize(pem) };
  if (forPending) {
    updates.tls_key_ref = row.pending_tls_key_ref!;
    updates.tls_csr = row.pending_tls_csr!;
    updates.pending_tls_key_ref = null;
    updates.pending_tls_csr = null;
  }
  return updates;
}

function parseField(field: string, pem: string): Uint8Array[] {
  let ders: Uint8Array[];
  try {
    ders = splitPemBundle(pem);
  } catch (err) {
    throw new KeyferryError('certificate_invalid', `${field} is not PEM: ${(err as Error).message}`);
  }
  if (ders.length === 0) throw new KeyferryError('certificate_invalid', `${field} holds no PEM certificate`);
  for (const [i, der] of ders.entries()) {
    try {
      parseCertificate(der);
    } catch {
      throw new KeyferryError(
        'certificate_invalid',
        `${field} certificate #${i + 1} is not an X.509 certificate`,
      );
    }
  }
  return ders;
}

function pemBundle(ders: readonly Uint8Array[]): string | null {
  return ders.length === 0 ? null : ders.map((der) => toPem(der, 'CERTIFICATE')).join('');
}

function normalize(pem: string): string {
  return splitPemBundle(pem)
    .map((der) => toPem(der, 'CERTIFICATE'))
    .join('');
}

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
import { recordAudit } from '../audit/audit-log.ts';
import type { Factory } from '../factories/factories.ts';
import { insertCustodyKey, type KeyCustody } from '../keys/custody.ts';
import type { Db } from '../storage/database.ts';

/** The factory PKI as the API shows it (fioctl's field names). */
export interface FactoryPkiView {
  'root-crt': string;
  'tls-crt': string;
  'ca-crt': string;
  'tls-csr': string;
  'change-meta': { 'updated-at': string; 'updated-by': string | null };
}

export interface FactoryPkiPatch {
  'root-crt'?: string | undefined;
  'tls-crt'?: string | undefined;
  'ca-crt'?: string | undefined;
}

/** Host name the device gateway answers to for this factory. */
export function gatewayHostname(factory: Factory, domain: string): string {
  return `${factory.repoId}.ota-lite.${domain}`;
}

/**
 * Makes the device gateway's TLS key in custody and its CSR. Runs in the transaction that
 * creates the factory, so a factory never exists without it.
 */
export async function setupFactoryPki(
  db: Db,
  custody: KeyCustody,
  factory: Factory,
  domain: string,
  now = new Date(),
): Promise<void> {
  const key = await custody.generate(`gateway-tls:${factory.name}`);
  await insertCustodyKey(db, key, now);
  const signer = await custody.signer({
    id: key.id,
    backend: key.backend,
    purpose: key.purpose,
    public_key: Buffer.from(key.publicKeySpki).toString('base64'),
    material: key.material,
    created_at: now.toISOString(),
  });
  const host = gatewayHostname(factory, domain);
  const csr = await createCsr({ subject: { CN: host, OU: factory.name }, dnsNames: [host], signer });
  await db
    .insertInto('factory_pki')
    .values({
      factory_id: factory.id,
      tls_key_ref: key.id,
      tls_csr: toPem(csr, 'CERTIFICATE REQUEST'),
      root_crt: null,
      tls_crt: null,
      ca_crt: null,
      updated_at: now.toISOString(),
      updated_by: null,
    })
    .execute();
}

export async function getFactoryPki(db: Db, factoryId: number): Promise<FactoryPkiView> {
  const row = await db
    .selectFrom('factory_pki')
    .selectAll()
    .where('factory_id', '=', factoryId)
    .executeTakeFirst();
  if (!row) throw new KeyferryError('internal', `factory ${factoryId} has no PKI row`);
  return {
    'root-crt': row.root_crt ?? '',
    'tls-crt': row.tls_crt ?? '',
    'ca-crt': row.ca_crt ?? '',
    'tls-csr': row.tls_csr,
    'change-meta': { 'updated-at': row.updated_at, 'updated-by': row.updated_by },
  };
}

/**
 * Applies a PATCH of the factory PKI after checking every part against the others: the root
 * is a self-signed CA, `tls-crt` carries the service's own TLS key and chains to the root,
 * every `ca-crt` entry is a CA under the root. The root can be set once.
 */
export async function updateFactoryPki(
  db: Db,
  factory: Factory,
  patch: FactoryPkiPatch,
  context: { actor: string; correlationId: string; now?: Date },
): Promise<FactoryPkiView> {
  const now = context.now ?? new Date();
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

    if (patch['tls-crt'] !== undefined) {
      const tls = parseField('tls-crt', patch['tls-crt'])[0] as Uint8Array;
      const csr = parseCsr(fromPem(row.tls_csr, 'CERTIFICATE REQUEST'));
      if (!publicKeysEqual(parseCertificate(tls).spki, csr.publicKeySpki)) {
        throw new KeyferryError(
          'certificate_mismatch',
          'tls-crt does not carry the public key of the service TLS CSR: sign the tls-csr from GET certs/',
        );
      }
      verifyChain(tls, [], [root], now);
    }
    if (patch['ca-crt'] !== undefined && patch['ca-crt'].trim() !== '') {
      for (const [i, ca] of parseField('ca-crt', patch['ca-crt']).entries()) {
        if (!parseCertificate(ca).isCa) {
          throw new KeyferryError(
            'certificate_invalid',
            `ca-crt certificate #${i + 1} is not a CA certificate`,
          );
        }
        verifyChain(ca, [], [root], now);
      }
    }
    const updates = {
      root_crt: patch['root-crt'] !== undefined ? normalize(patch['root-crt']) : row.root_crt,
      tls_crt: patch['tls-crt'] !== undefined ? normalize(patch['tls-crt']) : row.tls_crt,
      ca_crt: patch['ca-crt'] !== undefined ? normalize(patch['ca-crt']) : row.ca_crt,
      updated_at: now.toISOString(),
      updated_by: context.actor,
    };
    await trx.updateTable('factory_pki').set(updates).where('factory_id', '=', factory.id).execute();
    await recordAudit(
      trx,
      {
        factoryId: factory.id,
        actor: context.actor,
        action: 'pki.update',
        object: 'certs',
        detail: { fields: Object.keys(patch).filter((k) => patch[k as keyof FactoryPkiPatch] !== undefined) },
        correlationId: context.correlationId,
      },
      now,
    );
    return getFactoryPki(trx, factory.id);
  });
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

function normalize(pem: string): string {
  return splitPemBundle(pem)
    .map((der) => toPem(der, 'CERTIFICATE'))
    .join('');
}

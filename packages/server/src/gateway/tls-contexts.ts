import { createSecureContext, type SecureContext } from 'node:tls';
import { KeyferryError } from '@keyferry/core';
import { type Factory, toFactory } from '../factories/factories.ts';
import { SERVER_TLS_POLICY } from '../http/tls-policy.ts';
import type { TlsKeyStore } from '../keys/custody.ts';
import type { Db } from '../storage/database.ts';

/** The TLS material a factory's gateway host presents: its tls-crt and its key. */
export interface FactoryTls {
  factory: Factory;
  /** Changes whenever the factory PKI does (PATCH certs/). */
  version: string;
  options: { cert: string; key: string };
  context: SecureContext;
}

/**
 * Resolves the factory a gateway connection is for and its TLS material. The SNI name
 * `<repoid>.ota-lite.<domain>` selects the factory; `localhost`, `ota-lite.<domain>` and no SNI
 * at all (a client dialling an IP address sends none) select the one factory that has a
 * tls-crt, when exactly one has. Contexts are rebuilt when the factory PKI changes.
 */
export class GatewayTlsContexts {
  readonly #cache = new Map<number, FactoryTls>();

  constructor(
    private readonly db: Db,
    private readonly tlsKeys: TlsKeyStore,
    private readonly domain: string,
  ) {}

  /** The factory named by an SNI host name (undefined/empty: none sent). */
  async forServername(servername: string | false | null | undefined): Promise<FactoryTls> {
    const host = (typeof servername === 'string' ? servername : '').toLowerCase().replace(/\.$/, '');
    const suffix = `.ota-lite.${this.domain}`;
    if (host.endsWith(suffix) && host.length > suffix.length) {
      const repoId = host.slice(0, -suffix.length);
      const row = /^[a-z0-9]{1,63}$/.test(repoId)
        ? await this.db.selectFrom('factories').selectAll().where('repo_id', '=', repoId).executeTakeFirst()
        : undefined;
      if (!row)
        throw new KeyferryError('not_found', `no factory has the gateway host name ${host}; check REPOID`);
      return this.#material(toFactory(row));
    }
    if (host === '' || host === 'localhost' || host === `ota-lite.${this.domain}`) return this.single();
    throw new KeyferryError(
      'not_found',
      `${host} is not a device gateway host name of this service (*${suffix})`,
    );
  }

  /** The one factory with a tls-crt, for clients that send no usable SNI. */
  async single(): Promise<FactoryTls> {
    const rows = await this.db
      .selectFrom('factory_pki')
      .innerJoin('factories', 'factories.id', 'factory_pki.factory_id')
      .selectAll('factories')
      .where('factory_pki.tls_crt', 'is not', null)
      .limit(2)
      .execute();
    if (rows.length !== 1) {
      throw new KeyferryError(
        'not_found',
        `${rows.length} factories have a gateway tls-crt; connect with SNI <repoid>.ota-lite.${this.domain}`,
      );
    }
    return this.#material(toFactory(rows[0]!));
  }

  async #material(factory: Factory): Promise<FactoryTls> {
    const pki = await this.db
      .selectFrom('factory_pki')
      .select(['tls_key_ref', 'tls_crt', 'updated_at'])
      .where('factory_id', '=', factory.id)
      .executeTakeFirst();
    if (!pki?.tls_crt) {
      throw new KeyferryError(
        'pki_missing',
        `factory ${factory.name} has no gateway tls-crt yet: sign the tls-csr and PATCH certs/ (keyferry keys ca create does this)`,
      );
    }
    const version = `${pki.updated_at}|${pki.tls_key_ref}|${pki.tls_crt.length}`;
    const cached = this.#cache.get(factory.id);
    if (cached && cached.version === version) return cached;
    const keyRow = await this.db
      .selectFrom('custody_keys')
      .selectAll()
      .where('id', '=', pki.tls_key_ref)
      .executeTakeFirstOrThrow();
    if (keyRow.backend !== this.tlsKeys.backend) throw keyOnHsm(factory, keyRow.id);
    const key = String((await this.tlsKeys.tlsServerKey(keyRow)).export({ format: 'pem', type: 'pkcs8' }));
    const options = { cert: pki.tls_crt, key };
    const material: FactoryTls = {
      factory,
      version,
      options,
      context: createSecureContext({ ...SERVER_TLS_POLICY, ...options }),
    };
    this.#cache.set(factory.id, material);
    return material;
  }
}

/**
 * Factories whose gateway TLS key in use is outside the TLS key store: made on the HSM by a
 * keyferry from before the store, with pkcs11 custody. The gateway cannot present them.
 */
export async function factoriesWithTlsKeyOnHsm(db: Db, tlsKeys: TlsKeyStore): Promise<string[]> {
  const rows = await db
    .selectFrom('factory_pki')
    .innerJoin('factories', 'factories.id', 'factory_pki.factory_id')
    .innerJoin('custody_keys', 'custody_keys.id', 'factory_pki.tls_key_ref')
    .select('factories.name')
    .where('factory_pki.tls_crt', 'is not', null)
    .where('custody_keys.backend', '!=', tlsKeys.backend)
    .orderBy('factories.name')
    .execute();
  return rows.map((r) => r.name);
}

/** What to do about such a factory; also logged once at start-up. */
export function keyOnHsmAdvice(names: readonly string[]): string {
  return `the device gateway TLS key of factory ${names.join(', ')} is on the HSM (made before keyferry kept TLS keys in soft custody) and Node's TLS server cannot present it: run keyferry keys ca rotate-tls <pki-dir> for the factory to move it into soft custody`;
}

function keyOnHsm(factory: Factory, keyId: string): KeyferryError {
  return new KeyferryError('key_custody_error', `${keyOnHsmAdvice([factory.name])} (key ${keyId})`);
}

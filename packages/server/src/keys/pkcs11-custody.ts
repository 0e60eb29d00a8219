import { randomBytes } from 'node:crypto';
import { KeyferryError } from '@keyferry/core';
import { openToken, type Token } from '@keyferry/pkcs11';
import type { Db } from '../storage/database.ts';
import type { CustodyKeysTable } from '../storage/tables.ts';
import type { CustodyKey, CustodySigner, KeyCustody } from './custody.ts';

/**
 * Keys generated on a PKCS#11 token (an HSM in production, SoftHSM2 in tests) as sensitive,
 * non-extractable objects. The database keeps only the object label; the token signs.
 */
export class Pkcs11Custody implements KeyCustody {
  readonly backend = 'pkcs11' as const;
  readonly #token: Token;
  readonly #cache = new Map<string, CustodySigner>();

  private constructor(token: Token) {
    this.#token = token;
  }

  static async open(spec: { module: string; tokenLabel: string; pin: string }): Promise<Pkcs11Custody> {
    return new Pkcs11Custody(openToken(spec));
  }

  async generate(purpose: string): Promise<CustodyKey> {
    const idBytes = randomBytes(12);
    const id = `key_${idBytes.toString('hex')}`;
    const { publicKeySpki } = this.#token.generateEcKeyPair({ label: id, id: idBytes });
    return { id, backend: 'pkcs11', purpose, publicKeySpki: new Uint8Array(publicKeySpki), material: id };
  }

  async signer(row: CustodyKeysTable): Promise<CustodySigner> {
    const cached = this.#cache.get(row.id);
    if (cached) return cached;
    if (row.backend !== 'pkcs11') {
      throw new KeyferryError(
        'key_custody_error',
        `key ${row.id} is held by the ${row.backend} backend, not pkcs11`,
      );
    }
    const key = this.#token.findPrivateKey({ label: row.material });
    if (!key) {
      throw new KeyferryError(
        'key_custody_error',
        `key ${row.material} is not on token ${this.#token.label}: is keyCustody pointing at the token this database was made with?`,
      );
    }
    const signer = this.#token.signer(key);
    this.#cache.set(row.id, signer);
    return signer;
  }

  async verifyAccess(db: Db): Promise<void> {
    const row = await db
      .selectFrom('custody_keys')
      .selectAll()
      .where('backend', '=', 'pkcs11')
      .limit(1)
      .executeTakeFirst();
    if (row) await this.signer(row);
  }

  async close(): Promise<void> {
    this.#cache.clear();
    this.#token.close();
  }
}

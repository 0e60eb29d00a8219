import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
} from 'node:crypto';
import {
  chmodSync,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname } from 'node:path';
import { KeyferryError } from '@keyferry/core';
import type { Db } from '../storage/database.ts';
import type { CustodyKeysTable } from '../storage/tables.ts';
import type { CustodyKey, CustodySigner, KeyCustody, TlsKeyStore } from './custody.ts';

const MASTER_KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * Writes a new master key to `file` unless one appears there meanwhile: written whole to a
 * file of its own first, then linked into place, which fails when the name exists. Two
 * processes starting on a new data dir at once (keyferryd and a `keyferryd admin` command)
 * both end up with the one that was linked first, never with a half-written file.
 */
function createMasterKey(file: string): void {
  mkdirSync(dirname(file), { recursive: true });
  const draft = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.new`;
  writeFileSync(draft, randomBytes(MASTER_KEY_BYTES).toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
  try {
    chmodSync(draft, 0o600);
    linkSync(draft, file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    // a file system without hard links: created in place, as before
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err;
    writeFileSync(file, readFileSync(draft), { mode: 0o600, flag: 'wx' });
  } finally {
    rmSync(draft, { force: true });
  }
}

/**
 * Keys kept in the database as PKCS#8 encrypted with AES-256-GCM under a master key file.
 * The key id is the GCM associated data, so a wrapped key copied onto another row fails to
 * open instead of signing under the wrong name.
 */
export class SoftCustody implements KeyCustody, TlsKeyStore {
  readonly backend = 'soft' as const;
  readonly #masterKey: Buffer;
  readonly #masterKeyFile: string;
  readonly #cache = new Map<string, CustodySigner>();

  private constructor(masterKey: Buffer, masterKeyFile: string) {
    this.#masterKey = masterKey;
    this.#masterKeyFile = masterKeyFile;
  }

  /**
   * Reads the master key file, creating it (0600) when `create` is allowed and it is absent.
   * `keysHeld: false` says the database holds no soft keys yet (the file was never needed).
   */
  static open(masterKeyFile: string, options: { create: boolean; keysHeld?: boolean }): SoftCustody {
    const setting = 'keyCustody.masterKeyFile or KEYFERRY_MASTER_KEY_FILE';
    if (!existsSync(masterKeyFile)) {
      if (!options.create && options.keysHeld === false) {
        // only `keyferryd admin` opens custody without making the key
        throw new KeyferryError(
          'key_custody_error',
          `there is no master key at ${masterKeyFile}: keyferryd makes it on its first start, admin commands never do; ` +
            `start keyferryd first, and give admin commands the master key it uses (${setting}): with keyferryd.service, ` +
            'run them with KEYFERRY_MASTER_KEY_FILE=/etc/keyferry/master.key (the file its LoadCredential=master.key: names)',
        );
      }
      if (!options.create) {
        throw new KeyferryError(
          'key_custody_error',
          `master key file ${masterKeyFile} is missing but the database holds keys wrapped with it; restore the file from backup`,
        );
      }
      createMasterKey(masterKeyFile);
    }
    const stat = statSync(masterKeyFile);
    if (!stat.isFile()) {
      throw new KeyferryError(
        'key_custody_error',
        `master key file ${masterKeyFile} is ${stat.isDirectory() ? 'a directory' : 'not a regular file'}: ` +
          `${setting} must name the file holding the master key (64 hex digits); point it at that file`,
      );
    }
    const mode = stat.mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new KeyferryError(
        'key_custody_error',
        `master key file ${masterKeyFile} is readable by others (mode ${mode.toString(8)}); run chmod 600 on it`,
      );
    }
    let text: string;
    try {
      text = readFileSync(masterKeyFile, 'utf8').trim();
    } catch (err) {
      throw new KeyferryError(
        'key_custody_error',
        `cannot read master key file ${masterKeyFile} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): ` +
          `run keyferryd as the user the file belongs to, or name a readable one with ${setting}`,
      );
    }
    if (!/^[0-9a-f]{64}$/i.test(text)) {
      throw new KeyferryError(
        'key_custody_error',
        `master key file ${masterKeyFile} must hold ${MASTER_KEY_BYTES} bytes as 64 hex digits`,
      );
    }
    return new SoftCustody(Buffer.from(text, 'hex'), masterKeyFile);
  }

  async generate(purpose: string): Promise<CustodyKey> {
    const id = `key_${randomBytes(12).toString('hex')}`;
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#masterKey, iv);
    cipher.setAAD(Buffer.from(id));
    const body = Buffer.concat([cipher.update(pkcs8), cipher.final()]);
    pkcs8.fill(0);
    const material = Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
    const spki = publicKey.export({ format: 'der', type: 'spki' });
    return { id, backend: 'soft', purpose, publicKeySpki: new Uint8Array(spki), material };
  }

  /** Nothing to remove: the wrapped key lives only in the row that was never stored. */
  async discard(_key: CustodyKey): Promise<void> {}

  async signer(row: CustodyKeysTable): Promise<CustodySigner> {
    const cached = this.#cache.get(row.id);
    if (cached) return cached;
    if (row.backend !== 'soft') {
      throw new KeyferryError(
        'key_custody_error',
        `key ${row.id} is held by the ${row.backend} backend, not soft`,
      );
    }
    const key = this.#unwrap(row);
    const publicKeySpki = new Uint8Array(createPublicKey(key).export({ format: 'der', type: 'spki' }));
    const signer: CustodySigner = {
      publicKeySpki,
      sign: async (data) => new Uint8Array(sign('sha256', data, { key, dsaEncoding: 'der' })),
    };
    this.#cache.set(row.id, signer);
    return signer;
  }

  async tlsServerKey(row: CustodyKeysTable): Promise<KeyObject> {
    if (row.backend !== 'soft') {
      throw new KeyferryError(
        'key_custody_error',
        `key ${row.id} is held by the ${row.backend} backend, not soft`,
      );
    }
    return this.#unwrap(row);
  }

  async verifyAccess(db: Db): Promise<void> {
    const row = await db
      .selectFrom('custody_keys')
      .selectAll()
      .where('backend', '=', 'soft')
      .limit(1)
      .executeTakeFirst();
    if (row) this.#unwrap(row);
  }

  async close(): Promise<void> {
    this.#cache.clear();
  }

  #unwrap(row: CustodyKeysTable): KeyObject {
    const blob = Buffer.from(row.material, 'base64');
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#masterKey, blob.subarray(0, IV_BYTES));
      decipher.setAAD(Buffer.from(row.id));
      decipher.setAuthTag(blob.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
      const pkcs8 = Buffer.concat([decipher.update(blob.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]);
      const key = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
      pkcs8.fill(0);
      return key;
    } catch (err) {
      throw new KeyferryError(
        'key_custody_error',
        `master key file ${this.#masterKeyFile} does not open stored key ${row.id}: it is not the master key this database was made with; restore the right file`,
        { cause: err },
      );
    }
  }
}

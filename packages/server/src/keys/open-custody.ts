import { readFileSync, statSync } from 'node:fs';
import { KeyferryError } from '@keyferry/core';
import type { Config } from '../config/schema.ts';
import type { Database, Db } from '../storage/database.ts';
import {
  DEVICE_LINK_KEY_PURPOSES,
  GATEWAY_TLS_PURPOSE_PREFIX,
  type KeyCustody,
  type TlsKeyStore,
} from './custody.ts';
import type { CustodyLog } from './pkcs11-custody.ts';
import { SoftCustody } from './soft-custody.ts';

/**
 * The configured custody of CA keys and the store of TLS server keys: one soft backend for
 * both, or the PKCS#11 token for CA keys with a soft store beside it for TLS keys.
 */
export interface KeyStores {
  custody: KeyCustody;
  tlsKeys: TlsKeyStore;
  close(): Promise<void>;
}

/**
 * Opens the configured key custody and proves it can use the keys already stored. With
 * `createMasterKey` (keyferryd's start; not its admin commands) a database that holds no soft
 * keys yet gets a new master key file when there is none.
 */
export async function openCustody(
  config: Config,
  database: Database,
  options: { createMasterKey: boolean; log?: CustodyLog } = { createMasterKey: true },
): Promise<KeyStores> {
  const { db } = database;
  const spec = config.keyCustody;
  await refuseForeignKeys(db, spec.kind);
  const masterKeyFile = spec.masterKeyFile ?? `${config.dataDir}/master.key`;
  const softKeys = await db
    .selectFrom('custody_keys')
    .select((eb) => eb.fn.countAll().as('n'))
    .where('backend', '=', 'soft')
    .executeTakeFirstOrThrow();
  const keysHeld = Number(softKeys.n) > 0;
  const openSoft = () =>
    SoftCustody.open(masterKeyFile, { create: options.createMasterKey && !keysHeld, keysHeld });
  if (spec.kind === 'soft') {
    const custody = openSoft();
    await custody.verifyAccess(db);
    return { custody, tlsKeys: custody, close: () => custody.close() };
  }
  const { Pkcs11Custody } = await import('./pkcs11-custody.ts');
  const custody = await Pkcs11Custody.open({
    module: spec.module,
    tokenLabel: spec.tokenLabel,
    pin: spec.pin ?? readPinFile(spec.pinFile!),
    ...(spec.pin === undefined && { pinSetting: `the PIN in keyCustody.pinFile ${spec.pinFile}` }),
    ...(options.log && { log: options.log }),
  });
  try {
    await custody.verifyAccess(db);
    const tlsKeys = openSoft();
    await tlsKeys.verifyAccess(db);
    return {
      custody,
      tlsKeys,
      close: async () => {
        await tlsKeys.close();
        await custody.close();
      },
    };
  } catch (err) {
    await custody.close();
    throw err;
  }
}

/**
 * Keys of the other backend mean the database was made with it. Beside pkcs11 custody, soft
 * keys are expected when they are TLS keys (the soft store keeps those: the gateway's, and the
 * device-link's with deviceLink.tlsKeys: custody).
 */
async function refuseForeignKeys(db: Db, kind: KeyCustody['backend']): Promise<void> {
  let query = db
    .selectFrom('custody_keys')
    .select(['backend', (eb) => eb.fn.countAll().as('n')])
    .where('backend', '!=', kind);
  if (kind === 'pkcs11') {
    query = query
      .where('purpose', 'not like', `${GATEWAY_TLS_PURPOSE_PREFIX}%`)
      .where('purpose', 'not in', Object.values(DEVICE_LINK_KEY_PURPOSES));
  }
  for (const { backend, n } of await query.groupBy('backend').execute()) {
    throw new KeyferryError(
      'key_custody_error',
      `the database holds ${Number(n)} key(s) of the ${backend} backend but keyCustody.kind is ${kind}; configure the ${backend} backend`,
    );
  }
}

/** keyCustody.pinFile: the PIN on the file's first line, surrounding white space dropped. */
function readPinFile(file: string): string {
  let text: string;
  try {
    // as the master key: a PIN others may read is refused (systemd's credentials are 0400)
    const mode = statSync(file).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new KeyferryError(
        'config_invalid',
        `keyCustody.pinFile ${file} is readable by others (mode ${mode.toString(8)}); run chmod 600 on it`,
      );
    }
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof KeyferryError) throw err;
    throw new KeyferryError(
      'config_invalid',
      `cannot read keyCustody.pinFile ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  const pin = text.split(/\r?\n/)[0]?.trim() ?? '';
  if (pin === '')
    throw new KeyferryError(
      'config_invalid',
      `keyCustody.pinFile ${file} is empty: put the PIN on its first line`,
    );
  return pin;
}

import { KeyferryError } from '@keyferry/core';
import type { Config } from '../config/schema.ts';
import type { Database } from '../storage/database.ts';
import type { KeyCustody } from './custody.ts';
import { SoftCustody } from './soft-custody.ts';

/** Opens the configured key custody backend and proves it can use the keys already stored. */
export async function openCustody(config: Config, database: Database): Promise<KeyCustody> {
  const { db } = database;
  const stored = await db
    .selectFrom('custody_keys')
    .select(['backend', (eb) => eb.fn.countAll().as('n')])
    .groupBy('backend')
    .execute();
  const counts = new Map(stored.map((r) => [r.backend, Number(r.n)]));
  const spec = config.keyCustody;
  let custody: KeyCustody;
  if (spec.kind === 'soft') {
    const file = spec.masterKeyFile ?? `${config.dataDir}/master.key`;
    custody = SoftCustody.open(file, { create: (counts.get('soft') ?? 0) === 0 });
  } else {
    const { Pkcs11Custody } = await import('./pkcs11-custody.ts');
    custody = await Pkcs11Custody.open(spec);
  }
  for (const [backend, n] of counts) {
    if (backend !== custody.backend) {
      throw new KeyferryError(
        'key_custody_error',
        `the database holds ${n} key(s) of the ${backend} backend but keyCustody.kind is ${custody.backend}; configure the ${backend} backend`,
      );
    }
  }
  await custody.verifyAccess(db);
  return custody;
}

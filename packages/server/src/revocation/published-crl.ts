import { KeyferryError } from '@keyferry/core';
import { findFactoryByName } from '../factories/factories.ts';
import type { Db } from '../storage/database.ts';

/** `<ca-id>.crl`: the file name a CRL is published under. */
export const CRL_FILE = /^([0-9]{1,9})\.crl$/;

/**
 * The id of intermediate CA `<id>` of factory `factoryName`, from the file name its CRL is
 * published under (`<id>.crl`), without a token: a CRL is signed and meant for anyone who
 * checks a certificate. Unknown factories and CAs of another factory answer alike.
 */
export async function publishedCaId(db: Db, factoryName: string, file: string): Promise<number> {
  const match = CRL_FILE.exec(file);
  const factory = match ? await findFactoryByName(db, factoryName) : undefined;
  const ca =
    factory && match
      ? await db
          .selectFrom('intermediate_cas')
          .select('id')
          .where('factory_id', '=', factory.id)
          .where('id', '=', Number(match[1]))
          .executeTakeFirst()
      : undefined;
  if (!ca) {
    throw new KeyferryError(
      'not_found',
      `no CRL ${factoryName}/${file}: CRLs are at /crl/<factory>/<intermediate CA id>.crl (ids: GET el2g/intermediate-cas/)`,
    );
  }
  return ca.id;
}

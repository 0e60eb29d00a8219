import { KeyferryError } from '@keyferry/core';
import { findFactoryByName } from '../factories/factories.ts';
import { type CurrentCrl, currentCrl, type RevocationDeps } from './crl-store.ts';

/** `<ca-id>.crl`: the file name a CRL is published under. */
export const CRL_FILE = /^([0-9]{1,9})\.crl$/;

/**
 * The CRL of intermediate CA `caId` of factory `factoryName`, as published without a token:
 * a CRL is signed and meant for anyone who checks a certificate. Unknown factories and CAs of
 * another factory answer alike.
 */
export async function publishedCrl(
  deps: RevocationDeps,
  factoryName: string,
  file: string,
): Promise<CurrentCrl> {
  const match = CRL_FILE.exec(file);
  const factory = match ? await findFactoryByName(deps.db, factoryName) : undefined;
  const ca =
    factory && match
      ? await deps.db
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
  return currentCrl(deps, ca.id);
}

import type { Db } from '../storage/database.ts';
import { assignToAllGroups } from './group-assignments.ts';
import { type ChangeContext, ensureSecureObject, type SecureObject } from './secure-objects.ts';

/** Names and object ids of a KEYPAIR and the CERTIFICATE that certifies it (as EdgeLock 2GO named them). */
export interface CredentialPairNames {
  readonly keypair: { readonly name: string; readonly objectId: string };
  readonly certificate: { readonly name: string; readonly objectId: string };
}

/**
 * Makes (once) the KEYPAIR + CERTIFICATE secure objects a CA issues for and assigns both to
 * every device group of the factory, within the plan's per-device limits. The device gateway
 * and the AWS IoT integration each own one such pair.
 */
export async function ensureCredentialPair(
  trx: Db,
  factoryId: number,
  names: CredentialPairNames,
  caId: number,
  change: ChangeContext,
  now: Date,
): Promise<{ keypair: SecureObject; certificate: SecureObject; assigned: number }> {
  const { object: keypair } = await ensureSecureObject(
    trx,
    factoryId,
    { ...names.keypair, type: 'KEYPAIR' },
    change,
    now,
  );
  const { object: certificate } = await ensureSecureObject(
    trx,
    factoryId,
    { ...names.certificate, type: 'CERTIFICATE', caId, keypairId: keypair.id },
    change,
    now,
  );
  const assigned = await assignToAllGroups(trx, factoryId, [keypair.id, certificate.id], change, now);
  return { keypair, certificate, assigned };
}

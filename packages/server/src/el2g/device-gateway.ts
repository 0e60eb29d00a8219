import { KeyferryError } from '@keyferry/core';
import type { Factory } from '../factories/factories.ts';
import type { KeyCustody } from '../keys/custody.ts';
import type { Db } from '../storage/database.ts';
import { certificatePem, checkSignedCa, openCaRequest, requestCaKey } from './ca-requests.ts';
import { ensureCredentialPair } from './credential-pair.ts';
import { type IntermediateCa, upsertIntermediateCa } from './intermediate-cas.ts';
import type { ChangeContext, SecureObject } from './secure-objects.ts';

/** Names and object ids of the device gateway credentials (as EdgeLock 2GO named them). */
export const DEVICE_GATEWAY = {
  caName: 'fio-device-gateway-ca',
  keypair: { name: 'fio-device-gateway-ca-kp', objectId: '83000042' },
  certificate: { name: 'fio-device-gateway-ca', objectId: '83000043' },
} as const;

/**
 * POST el2g/device-gateway/: the CSR `{id, value}` of the pending CA key, made in custody on
 * the first call (`created`) and answered again until a PUT completes it.
 */
export async function requestDeviceGatewayCa(
  db: Db,
  custody: KeyCustody,
  factory: Factory,
  change: ChangeContext,
): Promise<{ id: number; value: string; created: boolean }> {
  const { id, csrPem, created } = await requestCaKey(db, custody, factory, DEVICE_GATEWAY.caName, change);
  return { id, value: csrPem, created };
}

export interface DeviceGatewayResult {
  ca: IntermediateCa;
  /** False when an existing fio-device-gateway-ca was given the new key and certificate. */
  created: boolean;
  objects: SecureObject[];
  /** New group assignments made (0 on a re-run). */
  assigned: number;
}

/**
 * PUT el2g/device-gateway/: checks the root's signature on the CSR `id`, then in one
 * transaction creates or updates the intermediate CA, makes sure the KEYPAIR and CERTIFICATE
 * objects exist, assigns them to every device group and closes the request. Any refusal
 * leaves everything as it was.
 */
export async function completeDeviceGatewayCa(
  db: Db,
  factory: Factory,
  answer: { id: number; rootCa: string; signedCert: string },
  change: ChangeContext,
  now = new Date(),
): Promise<DeviceGatewayResult> {
  return db.transaction().execute(async (trx) => {
    const request = await openCaRequest(trx, factory.id, answer.id, DEVICE_GATEWAY.caName);
    const cert = await checkSignedCa(trx, factory.id, request, answer, now);
    // Claim the request first: a concurrent PUT of the same id then finds it answered.
    const claimed = await trx
      .updateTable('ca_requests')
      .set({ completed_at: now.toISOString() })
      .where('id', '=', request.id)
      .where('completed_at', 'is', null)
      .executeTakeFirst();
    if (Number(claimed.numUpdatedRows) !== 1) {
      throw new KeyferryError('conflict', `CSR ${request.id} was answered by another request meanwhile`);
    }
    const { ca, created } = await upsertIntermediateCa(
      trx,
      factory.id,
      { name: DEVICE_GATEWAY.caName, keyRef: request.key_ref, certificatePem: certificatePem(cert) },
      change,
      now,
    );
    const { keypair, certificate, assigned } = await ensureCredentialPair(
      trx,
      factory.id,
      DEVICE_GATEWAY,
      ca.id,
      change,
      now,
    );
    return { ca, created, objects: [keypair, certificate], assigned };
  });
}

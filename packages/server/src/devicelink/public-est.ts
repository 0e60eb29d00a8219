import { deviceCsrAttributes, KeyferryError } from '@keyferry/core';
import { DEVICE_GATEWAY } from '../el2g/device-gateway.ts';
import type { Factory } from '../factories/factories.ts';
import type { Db } from '../storage/database.ts';

/**
 * What any EST client may ask without a client certificate (RFC 7030 §4.1.1: a client needs
 * the CA chain before it can judge anything; §4.5: the CSR attributes): answers that name a
 * certificate object of the factory, never a device.
 */
export interface PublicCertificateObject {
  name: string;
  caId: number | null;
  validityDays: number | null;
  validitySeconds: number | null;
}

/**
 * The label-less EST paths (`/.well-known/est/cacerts`, …) serve this object: the device
 * gateway certificate every factory has, so a client that cannot add a path segment works.
 */
export const DEFAULT_EST_LABEL: string = DEVICE_GATEWAY.certificate.name;

/** The factory's CERTIFICATE object `label`, or `unknown_label` naming the ones it has. */
export async function factoryCertificateObject(
  db: Db,
  factory: Factory,
  label: string,
): Promise<PublicCertificateObject> {
  const rows = await db
    .selectFrom('secure_objects')
    .select(['name', 'ca_id', 'validity_days', 'validity_seconds'])
    .where('factory_id', '=', factory.id)
    .where('type', '=', 'CERTIFICATE')
    .orderBy('name')
    .execute();
  const row = rows.find((r) => r.name === label);
  if (!row) {
    throw new KeyferryError(
      'unknown_label',
      `factory ${factory.name} has no certificate object ${JSON.stringify(label)}; it has: ${rows.map((r) => r.name).join(', ') || 'none'}`,
    );
  }
  return {
    name: row.name,
    caId: row.ca_id,
    validityDays: row.validity_days,
    validitySeconds: row.validity_seconds,
  };
}

/** The CsrAttrs DER every device certificate object answers (one profile: P-256, ECDSA-SHA256). */
export const CSR_ATTRIBUTES: Uint8Array = deviceCsrAttributes();

import type { ParsedCertificate } from '@keyferry/core';
import { recordAudit } from '../audit/audit-log.ts';
import type { Db } from '../storage/database.ts';
import type { GatewayDevicesTable } from '../storage/gateway-tables.ts';

export const DEFAULT_GATEWAY_DEVICE_PAGE = 1_000;
export const MAX_GATEWAY_DEVICE_PAGE = 10_000;

/** A device as the gateway knows it: `GET /device` on the gateway and `GET devices/`. */
export interface GatewayDeviceRecord {
  name: string;
  factory: string;
  'cert-fingerprint': string;
  'cert-serial': string;
  'first-seen': string;
  'last-seen': string;
}

type Row = Pick<
  GatewayDevicesTable,
  'name' | 'factory_ou' | 'cert_fingerprint' | 'cert_serial' | 'first_seen' | 'last_seen'
>;

function toRecord(row: Row): GatewayDeviceRecord {
  return {
    name: row.name,
    factory: row.factory_ou,
    'cert-fingerprint': row.cert_fingerprint,
    'cert-serial': row.cert_serial,
    'first-seen': row.first_seen,
    'last-seen': row.last_seen,
  };
}

/**
 * Records a successful gateway call (docs/api.md): the first one registers the device (name =
 * CN, factory = OU, certificate fingerprint and serial, first seen); later ones move last seen
 * and follow a rotated certificate. One statement, so concurrent first calls cannot collide.
 */
export async function recordGatewayCall(
  db: Db,
  factoryId: number,
  cert: ParsedCertificate,
  context: { correlationId: string },
  now = new Date(),
): Promise<GatewayDeviceRecord> {
  const at = now.toISOString();
  const name = cert.subjectAttributes.CN ?? '';
  const values = {
    factory_ou: cert.subjectAttributes.OU ?? '',
    cert_fingerprint: cert.fingerprintSha256,
    cert_serial: cert.serialHex,
    last_seen: at,
  };
  const before = await db
    .selectFrom('gateway_devices')
    .select(['cert_fingerprint'])
    .where('factory_id', '=', factoryId)
    .where('name', '=', name)
    .executeTakeFirst();
  const row = await db
    .insertInto('gateway_devices')
    .values({ factory_id: factoryId, name, first_seen: at, ...values })
    .onConflict((oc) => oc.columns(['factory_id', 'name']).doUpdateSet(values))
    .returningAll()
    .executeTakeFirstOrThrow();
  if (!before || before.cert_fingerprint !== cert.fingerprintSha256) {
    await recordAudit(
      db,
      {
        factoryId,
        actor: `device:${name}`,
        action: before ? 'gateway-device.certificate' : 'gateway-device.register',
        object: `gateway-device:${name}`,
        detail: { serial: cert.serialHex, fingerprint: cert.fingerprintSha256 },
        correlationId: context.correlationId,
      },
      now,
    );
  }
  return toRecord(row);
}

export interface GatewayDevicePage {
  devices: GatewayDeviceRecord[];
  /** Keyset cursor of the next page (`?after=`), or null after the last page. */
  next: number | null;
}

/** Registered devices of a factory in registration order, keyset-paged like `el2g/devices/`. */
export async function listGatewayDevices(
  db: Db,
  factoryId: number,
  options: { limit: number; after?: number; offset?: number },
): Promise<GatewayDevicePage> {
  let query = db.selectFrom('gateway_devices').selectAll().where('factory_id', '=', factoryId);
  if (options.after !== undefined) query = query.where('id', '>', options.after);
  query = query.orderBy('id').limit(options.limit);
  if (options.offset !== undefined && options.offset > 0) query = query.offset(options.offset);
  const rows = await query.execute();
  const last = rows[rows.length - 1];
  return { devices: rows.map(toRecord), next: rows.length === options.limit && last ? last.id : null };
}

import { createHash, type X509Certificate } from 'node:crypto';
import { KeyferryError, parseDeviceId, toPem } from '@keyferry/core';
import type { Factory } from '../factories/factories.ts';
import type { Db } from '../storage/database.ts';
import { type DeviceRecord, findActiveDevice } from './device-records.ts';
import type { DeviceIdentity } from './identity.ts';

/** The device certificate a renewal is authenticated by: one live certificate of one object. */
export interface RenewalCredential {
  certificateId: number;
  serialHex: string;
  /** The CERTIFICATE secure object the certificate was issued for (its EST label). */
  objectName: string;
  notAfter: string;
}

/**
 * True when the client certificate claims to be one this factory issued to a device: the
 * device profile's OU is the factory's name, a vendor identity's is a 12NC. Only a claim: the
 * certificate is then looked up byte for byte among the certificates the factory issued.
 */
export function claimsDeviceCertificate(leaf: X509Certificate, factory: Factory): boolean {
  return leaf.subject.split('\n').includes(`OU=${factory.name}`);
}

/**
 * Authenticates a caller by a device certificate this factory issued (RFC 7030 §3.3.2: the
 * certificate being renewed). TLS proved the caller holds its key; the certificate must be
 * exactly one the factory's issuing CAs signed (the stored copy), of an allow-listed device,
 * neither revoked nor expired.
 */
export async function verifyDeviceCertificate(
  db: Db,
  factory: Factory,
  x509: X509Certificate,
  now = new Date(),
): Promise<{ identity: DeviceIdentity; device: DeviceRecord; credential: RenewalCredential }> {
  const leaf = x509.raw;
  const serialHex = x509.serialNumber.toLowerCase().replace(/^(00)+(?=[0-9a-f])/, '');
  const pem = toPem(leaf, 'CERTIFICATE');
  const row = await db
    .selectFrom('certificates')
    .innerJoin('secure_objects', 'secure_objects.id', 'certificates.secure_object_id')
    .innerJoin('devices', 'devices.id', 'certificates.device_row_id')
    .select([
      'certificates.id',
      'certificates.pem',
      'certificates.serial_hex',
      'certificates.not_before',
      'certificates.not_after',
      'certificates.revoked_at',
      'certificates.revocation_reason',
      'secure_objects.name as object_name',
      'devices.device_id',
    ])
    .where('certificates.factory_id', '=', factory.id)
    .where('certificates.serial_hex', '=', serialHex)
    .executeTakeFirst();
  if (!row || row.pem.trim() !== pem.trim()) {
    throw new KeyferryError(
      'untrusted_identity',
      `the client certificate (serial ${serialHex}) was not issued by factory ${factory.name}; connect with the secure element's vendor identity (key 0xF0000000, certificate 0xF0000001)`,
    );
  }
  if (row.revoked_at !== null) {
    throw new KeyferryError(
      'certificate_revoked',
      `the device certificate ${row.serial_hex} for ${row.object_name} was revoked (${row.revocation_reason ?? 'unspecified'}) at ${row.revoked_at}; renew with the vendor identity or the current certificate`,
    );
  }
  if (now.toISOString() > row.not_after || now.toISOString() < row.not_before) {
    throw new KeyferryError(
      'untrusted_identity',
      `the device certificate ${row.serial_hex} for ${row.object_name} is valid from ${row.not_before} to ${row.not_after}, not now: an expired certificate cannot renew itself; renew with the secure element's vendor identity (key 0xF0000000)`,
    );
  }
  const device = await findActiveDevice(db, factory.id, row.device_id);
  if (!device) {
    throw new KeyferryError(
      'device_not_allowlisted',
      `device ${row.device_id} is not on factory ${factory.name}'s allow-list; its certificates cannot renew`,
    );
  }
  return {
    device,
    identity: {
      deviceId: parseDeviceId(row.device_id),
      nc12: device.nc12,
      fingerprint: createHash('sha256').update(leaf).digest('hex'),
      // the vendor identity key is not on this connection; the CSR key check has only the stored certificates
      publicKeySpki: undefined,
    },
    credential: {
      certificateId: row.id,
      serialHex: row.serial_hex,
      objectName: row.object_name,
      notAfter: row.not_after,
    },
  };
}

/**
 * What a device certificate may do on the device-link: renew its own object, nothing else.
 * Everything else needs the vendor identity (manifest, first enrollment, report).
 */
export function assertRenewalScope(
  credential: RenewalCredential,
  operation: string,
  label: string | undefined,
): void {
  if (operation === 'simplereenroll' && label === credential.objectName) return;
  const what =
    operation === 'simplereenroll'
      ? `simplereenroll of ${JSON.stringify(label)}`
      : operation.startsWith('/')
        ? operation
        : `${operation} of ${JSON.stringify(label)}`;
  throw new KeyferryError(
    'forbidden',
    `a device certificate authenticates only simplereenroll of its own object (${credential.objectName}), not ${what}; connect with the secure element's vendor identity (key 0xF0000000, certificate 0xF0000001) for that`,
  );
}

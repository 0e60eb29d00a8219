import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { factoryRootProfile, softSigner, toPem } from '@keyferry/core';
import type { Db } from '../../src/storage/database.ts';

/** A random SE05x-looking UID (they begin 0x04) as `0x…`. */
export function randomHexId(): string {
  return '0x04' + randomBytes(17).toString('hex');
}

/** `count` distinct ids in hex form, deterministic from `seed` so two calls never overlap by chance. */
export function sequentialIds(count: number, seed: number): string[] {
  const prefix = '04' + seed.toString(16).padStart(8, '0');
  return Array.from({ length: count }, (_, i) => '0x' + prefix + i.toString(16).padStart(26, '0'));
}

export async function factoryId(db: Db, name = 'demo'): Promise<number> {
  return (await db.selectFrom('factories').select('id').where('name', '=', name).executeTakeFirstOrThrow())
    .id;
}

/**
 * The device gateway's two secure objects, assigned to every group of the factory, written
 * straight to the tables (the secure-object service of the EL2GO account model makes them
 * in production; these tests are about the allow-list's view of them).
 */
export async function seedGatewayObjects(
  db: Db,
  factory: number,
): Promise<{ caId: number; keypair: number; cert: number }> {
  const now = new Date().toISOString();
  const keyRef = `test-ca-key-${factory}-${randomBytes(4).toString('hex')}`;
  await db
    .insertInto('custody_keys')
    .values({ id: keyRef, backend: 'soft', purpose: 'test', public_key: '', material: '', created_at: now })
    .execute();
  const ca = await db
    .insertInto('intermediate_cas')
    .values({
      factory_id: factory,
      name: 'fio-device-gateway-ca',
      algorithm: 'NIST_P256',
      key_ref: keyRef,
      certificate: await testCertificatePem(),
      created_at: now,
      updated_at: now,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  const keypair = await db
    .insertInto('secure_objects')
    .values({
      factory_id: factory,
      name: 'fio-device-gateway-ca-kp',
      type: 'KEYPAIR',
      object_id: '83000042',
      ca_id: null,
      keypair_id: null,
      validity_days: null,
      created_at: now,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  const cert = await db
    .insertInto('secure_objects')
    .values({
      factory_id: factory,
      name: 'fio-device-gateway-ca',
      type: 'CERTIFICATE',
      object_id: '83000043',
      ca_id: ca.id,
      keypair_id: keypair.id,
      validity_days: null,
      created_at: now,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  const groups = await db
    .selectFrom('device_groups')
    .select('id')
    .where('factory_id', '=', factory)
    .execute();
  for (const g of groups) {
    for (const o of [keypair.id, cert.id]) {
      await db
        .insertInto('group_objects')
        .values({ group_id: g.id, secure_object_id: o, assigned_at: now })
        .execute();
    }
  }
  return { caId: ca.id, keypair: keypair.id, cert: cert.id };
}

/** A real certificate PEM (content does not matter to the allow-list, only that it is shown). */
export async function testCertificatePem(): Promise<string> {
  const signer = softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
  return toPem(await factoryRootProfile({ factory: 'test', signer }), 'CERTIFICATE');
}

/** Records an issued certificate for a device's object, as the device-link will. */
export async function issueCertificate(
  db: Db,
  factory: number,
  deviceDecimal: string,
  objects: { caId: number; cert: number },
  pem: string,
): Promise<number> {
  const device = await db
    .selectFrom('devices')
    .select('id')
    .where('factory_id', '=', factory)
    .where('device_id', '=', deviceDecimal)
    .where('deleted_at', 'is', null)
    .executeTakeFirstOrThrow();
  const now = new Date().toISOString();
  const row = await db
    .insertInto('certificates')
    .values({
      factory_id: factory,
      device_row_id: device.id,
      secure_object_id: objects.cert,
      ca_id: objects.caId,
      serial_hex: randomBytes(16).toString('hex'),
      public_key_sha256: randomBytes(32).toString('hex'),
      subject_cn: 'test',
      pem,
      not_before: now,
      not_after: now,
      issued_at: now,
      revoked_at: null,
      revocation_reason: null,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  await db
    .insertInto('device_objects')
    .values({
      device_row_id: device.id,
      secure_object_id: objects.cert,
      state: 'GENERATION_COMPLETED',
      reason: null,
      updated_at: now,
    })
    .execute();
  return row.id;
}

/** How many device rows the allow-list holds, across factories. */
export async function deviceRowCount(db: Db): Promise<number> {
  const row = await db
    .selectFrom('devices')
    .select((eb) => eb.fn.countAll().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

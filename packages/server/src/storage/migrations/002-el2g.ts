import { type Kysely, sql } from 'kysely';
import type { MigrationContext } from '../migrate.ts';

/**
 * The EdgeLock 2GO account model: products a factory uses, device groups, intermediate CAs in
 * custody, secure objects and their group assignments, the allow-list, per-device
 * provisioning state, issued certificates, plans and bulk jobs.
 */
export async function up(db: Kysely<unknown>, ctx: MigrationContext): Promise<void> {
  await db.schema
    .createTable('factory_el2g')
    .addColumn('factory_id', 'integer', (c) => c.primaryKey().references('factories.id'))
    .addColumn('plan', 'text', (c) => c.notNull()) // evaluation | commercial
    .addColumn('enabled_at', 'text', (c) => c.notNull())
    .addColumn('subscription_start', 'text', (c) => c.notNull())
    .addColumn('max_devices', 'integer', (c) => c.notNull())
    .addColumn('max_keypairs', 'integer', (c) => c.notNull())
    .addColumn('max_certificates', 'integer', (c) => c.notNull())
    .addColumn('evaluation_days', 'integer', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('factory_products')
    .addColumn('factory_id', 'integer', (c) => c.notNull().references('factories.id'))
    .addColumn('nc12', 'text', (c) => c.notNull())
    .addColumn('added_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('factory_products_pk', ['factory_id', 'nc12'])
    .execute();

  await db.schema
    .createTable('device_groups')
    .addColumn('id', ctx.serial, (c) => c.primaryKey())
    .addColumn('factory_id', 'integer', (c) => c.notNull().references('factories.id'))
    .addColumn('nc12', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('production', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('device_groups_name', ['factory_id', 'name'])
    .execute();

  // A CSR the service made for a CA key it holds, waiting for the root's signature (PUT).
  await db.schema
    .createTable('ca_requests')
    .addColumn('id', ctx.serial, (c) => c.primaryKey())
    .addColumn('factory_id', 'integer', (c) => c.notNull().references('factories.id'))
    .addColumn('ca_name', 'text', (c) => c.notNull())
    .addColumn('key_ref', 'text', (c) => c.notNull().references('custody_keys.id'))
    .addColumn('csr', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('completed_at', 'text')
    .execute();

  await db.schema
    .createTable('intermediate_cas')
    .addColumn('id', ctx.serial, (c) => c.primaryKey())
    .addColumn('factory_id', 'integer', (c) => c.notNull().references('factories.id'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('algorithm', 'text', (c) => c.notNull())
    .addColumn('key_ref', 'text', (c) => c.notNull().references('custody_keys.id'))
    .addColumn('certificate', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('intermediate_cas_name', ['factory_id', 'name'])
    .execute();

  await db.schema
    .createTable('secure_objects')
    .addColumn('id', ctx.serial, (c) => c.primaryKey())
    .addColumn('factory_id', 'integer', (c) => c.notNull().references('factories.id'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull()) // KEYPAIR | CERTIFICATE
    .addColumn('object_id', 'text', (c) => c.notNull()) // 8 hex digits, no 0x: 83000042
    .addColumn('ca_id', 'integer', (c) => c.references('intermediate_cas.id'))
    .addColumn('keypair_id', 'integer', (c) => c.references('secure_objects.id'))
    .addColumn('validity_days', 'integer')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('secure_objects_name', ['factory_id', 'name'])
    .addUniqueConstraint('secure_objects_object_id', ['factory_id', 'object_id'])
    .execute();

  await db.schema
    .createTable('group_objects')
    .addColumn('group_id', 'integer', (c) => c.notNull().references('device_groups.id'))
    .addColumn('secure_object_id', 'integer', (c) => c.notNull().references('secure_objects.id'))
    .addColumn('assigned_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('group_objects_pk', ['group_id', 'secure_object_id'])
    .execute();

  // The allow-list. Deleting sets deleted_at: the record and its history stay.
  await db.schema
    .createTable('devices')
    .addColumn('id', ctx.serial, (c) => c.primaryKey())
    .addColumn('factory_id', 'integer', (c) => c.notNull().references('factories.id'))
    .addColumn('device_id', 'text', (c) => c.notNull()) // canonical decimal, 42 digits
    .addColumn('group_id', 'integer', (c) => c.notNull().references('device_groups.id'))
    .addColumn('nc12', 'text', (c) => c.notNull())
    .addColumn('added_at', 'text', (c) => c.notNull())
    .addColumn('deleted_at', 'text')
    .addColumn('last_connection', 'text')
    .execute();
  await db.schema
    .createIndex('devices_active_unique')
    .on('devices')
    .columns(['factory_id', 'device_id'])
    .unique()
    .where(sql.ref('deleted_at'), 'is', null)
    .execute();
  await db.schema.createIndex('devices_factory_page').on('devices').columns(['factory_id', 'id']).execute();
  await db.schema
    .createIndex('devices_factory_added')
    .on('devices')
    .columns(['factory_id', 'added_at'])
    .execute();

  // Provisioning state per device and object; absent row = GENERATION_ON_CONNECTION.
  await db.schema
    .createTable('device_objects')
    .addColumn('device_row_id', 'integer', (c) => c.notNull().references('devices.id'))
    .addColumn('secure_object_id', 'integer', (c) => c.notNull().references('secure_objects.id'))
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('reason', 'text')
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('device_objects_pk', ['device_row_id', 'secure_object_id'])
    .execute();

  await db.schema
    .createTable('certificates')
    .addColumn('id', ctx.serial, (c) => c.primaryKey())
    .addColumn('factory_id', 'integer', (c) => c.notNull().references('factories.id'))
    .addColumn('device_row_id', 'integer', (c) => c.references('devices.id'))
    .addColumn('secure_object_id', 'integer', (c) => c.references('secure_objects.id'))
    .addColumn('ca_id', 'integer', (c) => c.notNull().references('intermediate_cas.id'))
    .addColumn('serial_hex', 'text', (c) => c.notNull())
    .addColumn('public_key_sha256', 'text', (c) => c.notNull())
    .addColumn('subject_cn', 'text', (c) => c.notNull())
    .addColumn('pem', 'text', (c) => c.notNull())
    .addColumn('not_before', 'text', (c) => c.notNull())
    .addColumn('not_after', 'text', (c) => c.notNull())
    .addColumn('issued_at', 'text', (c) => c.notNull())
    .addColumn('revoked_at', 'text')
    .addColumn('revocation_reason', 'text')
    .addUniqueConstraint('certificates_serial', ['ca_id', 'serial_hex'])
    .execute();
  await db.schema
    .createIndex('certificates_device_object')
    .on('certificates')
    .columns(['device_row_id', 'secure_object_id'])
    .execute();
  await db.schema
    .createIndex('certificates_ca_revoked')
    .on('certificates')
    .columns(['ca_id', 'revoked_at'])
    .execute();

  await db.schema
    .createTable('bulk_jobs')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('factory_id', 'integer', (c) => c.notNull().references('factories.id'))
    .addColumn('status', 'text', (c) => c.notNull()) // queued | running | done | failed
    .addColumn('request', 'text', (c) => c.notNull())
    .addColumn('total', 'integer', (c) => c.notNull())
    .addColumn('processed', 'integer', (c) => c.notNull())
    .addColumn('result', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('finished_at', 'text')
    .execute();
}

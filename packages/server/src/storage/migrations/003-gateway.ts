import type { Kysely } from 'kysely';
import type { MigrationContext } from '../migrate.ts';

/**
 * The device gateway's registry (a device appears on its first successful mTLS call) and the
 * signed CRL kept per intermediate CA (revocation data served over HTTP).
 */
export async function up(db: Kysely<unknown>, ctx: MigrationContext): Promise<void> {
  await db.schema
    .createTable('gateway_devices')
    .addColumn('id', ctx.serial, (c) => c.primaryKey())
    .addColumn('factory_id', 'integer', (c) => c.notNull().references('factories.id'))
    .addColumn('name', 'text', (c) => c.notNull()) // certificate CN
    .addColumn('factory_ou', 'text', (c) => c.notNull()) // certificate OU
    .addColumn('cert_fingerprint', 'text', (c) => c.notNull()) // SHA-256 of the DER, hex
    .addColumn('cert_serial', 'text', (c) => c.notNull()) // hex
    .addColumn('first_seen', 'text', (c) => c.notNull())
    .addColumn('last_seen', 'text', (c) => c.notNull())
    .addUniqueConstraint('gateway_devices_name', ['factory_id', 'name'])
    .execute();

  await db.schema
    .createTable('crls')
    .addColumn('ca_id', 'integer', (c) => c.primaryKey().references('intermediate_cas.id'))
    .addColumn('crl_number', 'integer', (c) => c.notNull())
    .addColumn('this_update', 'text', (c) => c.notNull())
    .addColumn('next_update', 'text', (c) => c.notNull())
    // What the CRL was built from: revoked count and latest revocation time of the CA.
    .addColumn('revoked_count', 'integer', (c) => c.notNull())
    .addColumn('revoked_latest', 'text')
    .addColumn('der', 'text', (c) => c.notNull()) // base64
    .execute();
}

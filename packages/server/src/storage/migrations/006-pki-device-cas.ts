import type { Kysely } from 'kysely';
import type { MigrationContext } from '../migrate.ts';

/**
 * fioctl's full factory PKI: a pending gateway TLS key while `keys ca rotate-tls` waits for
 * the root's signature, the device CAs the root revoked or disabled (`ca-revoke-crl`), who
 * set the PKI up, and the online device CAs whose keys the service holds.
 */
export async function up(db: Kysely<unknown>, ctx: MigrationContext): Promise<void> {
  await db.schema.alterTable('factory_pki').addColumn('pending_tls_key_ref', 'text').execute();
  await db.schema.alterTable('factory_pki').addColumn('pending_tls_csr', 'text').execute();
  await db.schema.alterTable('factory_pki').addColumn('ca_revoke_crl', 'text').execute();
  // A JSON array of base-10 serials, as fioctl names device CAs.
  await db.schema
    .alterTable('factory_pki')
    .addColumn('disabled_ca_serials', 'text', (c) => c.notNull().defaultTo('[]'))
    .execute();
  // The revoked device CAs themselves (PEM bundle), so the gateway can say why it refuses.
  await db.schema.alterTable('factory_pki').addColumn('revoked_ca_crt', 'text').execute();
  await db.schema.alterTable('factory_pki').addColumn('created_at', 'text').execute();
  await db.schema.alterTable('factory_pki').addColumn('created_by', 'text').execute();

  // An online device CA: key in custody, CSR answered by the root through PATCH ca-crt.
  await db.schema
    .createTable('online_cas')
    .addColumn('id', ctx.serial, (c) => c.primaryKey())
    .addColumn('factory_id', 'integer', (c) => c.notNull().references('factories.id'))
    .addColumn('key_ref', 'text', (c) => c.notNull().references('custody_keys.id'))
    .addColumn('csr', 'text', (c) => c.notNull())
    .addColumn('certificate', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('signed_at', 'text')
    .execute();
}

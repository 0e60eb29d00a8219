import { type Kysely, sql } from 'kysely';
import type { MigrationContext } from '../migrate.ts';

/**
 * At most one open CA request per factory and CA name: a repeated `POST el2g/device-gateway/`
 * answers the pending CSR instead of making another custody key. Older databases may hold
 * several open requests of one CA (each with its own never-used key); the newest stays, the
 * others go with their custody key rows. A PKCS#11 token keeps those objects (labels
 * `intermediate-ca:…`): nothing references them any more.
 */
export async function up(db: Kysely<unknown>, _ctx: MigrationContext): Promise<void> {
  const stale = await sql<{ id: number; key_ref: string }>`
    select id, key_ref from ca_requests
    where completed_at is null
      and id not in (select max(id) from ca_requests where completed_at is null group by factory_id, ca_name)
  `.execute(db);
  for (const row of stale.rows) {
    await sql`delete from ca_requests where id = ${row.id}`.execute(db);
    await sql`delete from custody_keys where id = ${row.key_ref}
      and id not in (select key_ref from intermediate_cas)
      and id not in (select key_ref from ca_requests)
      and id not in (select tls_key_ref from factory_pki)`.execute(db);
  }
  await db.schema
    .createIndex('ca_requests_one_open')
    .on('ca_requests')
    .columns(['factory_id', 'ca_name'])
    .unique()
    .where(sql.ref('completed_at'), 'is', null)
    .execute();
}

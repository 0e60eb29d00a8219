import { type Kysely, sql } from 'kysely';
import type { MigrationContext } from '../migrate.ts';

/** Counters per CA: the triggers spread a CA's revocations over this many rows (the CA's version is their sum). */
export const REVOCATION_SHARDS = 16;

/**
 * Until when a revoked certificate stays on its CA's CRL, as SQL both backends index: the later
 * of its revocation and its expiry (ISO texts, which sort as the times they name). The
 * re-sign lists the rows where this is later than an hour before the previous CRL's signing
 * (revocation/crl-store.ts); a query must spell the expression exactly so to use the index.
 */
export const CRL_LISTED_UNTIL = 'CASE WHEN revoked_at > not_after THEN revoked_at ELSE not_after END';

/**
 * Whether a CA's stored CRL is current was told by counting the CA's revoked certificates on
 * every CRL read: O(revoked rows), which grow for as long as a fleet renews (their rows stay
 * after they leave the CRL), and on PostgreSQL a sequential scan of `certificates` once most of
 * its rows are revoked. Now triggers on `certificates` count every change to a CA's revoked set
 * (a revocation, its reason changed, a revoked row inserted or deleted, whichever code does it)
 * into `ca_revocation_versions`, and each CRL stores the sum it was signed at
 * (`crls.revocation_version`): a CRL read sums at most REVOCATION_SHARDS rows of the primary key.
 * The count is spread over REVOCATION_SHARDS rows per CA (by certificate id) because a row
 * updated in a revoking transaction is locked until it commits: on PostgreSQL one row per CA
 * made the rekeys of a fleet on one CA wait for each other's commits (pgbench, 16 clients
 * revoking on one CA, fsync on: 8,700 → 2,600 transactions/s with one row, 6,400–7,200 with 16).
 *
 * Re-signing lists the revoked certificates still to be listed, one range of the partial index
 * `certificates_ca_crl_until` (revoked rows only, by CA and CRL_LISTED_UNTIL), instead of
 * reading every revoked row of the CA and leaving out the expired ones. A first provisioning
 * inserts an unrevoked certificate: neither that index nor a trigger is touched.
 *
 * The CRLs stored before have no version, so each is signed again at its first read.
 */
export async function up(db: Kysely<unknown>, ctx: MigrationContext): Promise<void> {
  await db.schema
    .createTable('ca_revocation_versions')
    .addColumn('ca_id', 'integer', (c) => c.notNull())
    .addColumn('shard', 'integer', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addPrimaryKeyConstraint('ca_revocation_versions_pk', ['ca_id', 'shard'])
    .execute();
  await sql`INSERT INTO ca_revocation_versions (ca_id, shard, version)
    SELECT ca_id, 0, COUNT(*) FROM certificates WHERE revoked_at IS NOT NULL GROUP BY ca_id`.execute(db);
  await db.schema.alterTable('crls').addColumn('revocation_version', 'integer').execute();
  await sql`CREATE INDEX certificates_ca_crl_until ON certificates (ca_id, (${sql.raw(CRL_LISTED_UNTIL)}))
    WHERE revoked_at IS NOT NULL`.execute(db);

  const bump = (row: 'new' | 'old') =>
    sql.raw(`INSERT INTO ca_revocation_versions (ca_id, shard, version)
      VALUES (${row}.ca_id, ${row}.id % ${REVOCATION_SHARDS}, 1)
      ON CONFLICT (ca_id, shard) DO UPDATE SET version = ca_revocation_versions.version + 1`);
  // SQLite spells IS DISTINCT FROM as IS NOT
  const distinct = ctx.dialect === 'sqlite' ? 'IS NOT' : 'IS DISTINCT FROM';
  const changed = sql.raw(`old.revoked_at ${distinct} new.revoked_at
      OR old.revocation_reason ${distinct} new.revocation_reason`);
  if (ctx.dialect === 'sqlite') {
    await sql`CREATE TRIGGER certificates_revocation_update
      AFTER UPDATE OF revoked_at, revocation_reason ON certificates
      WHEN ${changed}
      BEGIN ${bump('new')}; END`.execute(db);
    await sql`CREATE TRIGGER certificates_revocation_insert AFTER INSERT ON certificates
      WHEN new.revoked_at IS NOT NULL
      BEGIN ${bump('new')}; END`.execute(db);
    await sql`CREATE TRIGGER certificates_revocation_delete AFTER DELETE ON certificates
      WHEN old.revoked_at IS NOT NULL
      BEGIN ${bump('old')}; END`.execute(db);
    return;
  }
  await sql`CREATE FUNCTION certificates_revocation_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        ${bump('old')};
      ELSE
        ${bump('new')};
      END IF;
      RETURN NULL;
    END $$`.execute(db);
  await sql`CREATE TRIGGER certificates_revocation_update
    AFTER UPDATE OF revoked_at, revocation_reason ON certificates
    FOR EACH ROW WHEN (${changed})
    EXECUTE FUNCTION certificates_revocation_changed()`.execute(db);
  await sql`CREATE TRIGGER certificates_revocation_insert AFTER INSERT ON certificates
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION certificates_revocation_changed()`.execute(db);
  await sql`CREATE TRIGGER certificates_revocation_delete AFTER DELETE ON certificates
    FOR EACH ROW WHEN (OLD.revoked_at IS NOT NULL)
    EXECUTE FUNCTION certificates_revocation_changed()`.execute(db);
}

import { type Kysely, sql } from 'kysely';

/**
 * A device's audit entries read through an index of their own: the console's device timeline
 * (`deviceTimeline`, audit/audit-log.ts) asked for the entries whose actor or object is the
 * device, newest first, and walked `audit_log_factory_id` backwards over every entry of the
 * factory to find them — ~0.3 s on SQLite at a million entries, with the event loop (and the
 * device-link of that process) blocked. The key is the device an entry is about: its actor
 * when the actor is a device (the device-link's own entries), else its object (what an
 * operator did to the device). The expression is written out here, not imported, so this
 * migration stays as it was released; the query repeats it exactly (an index on an expression
 * serves only a query with the same expression).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE INDEX audit_log_device ON audit_log
    (factory_id, (CASE WHEN substr(actor, 1, 7) = 'device:' THEN actor ELSE object END), id)`.execute(db);
}

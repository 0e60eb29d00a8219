import type { Kysely } from 'kysely';

/**
 * PostgreSQL: two enrollments of one device at once must not both find no live certificate and
 * both issue one. They were made one after the other by a transaction holding an advisory lock
 * of the device: three statements more per enrollment (BEGIN, the lock, COMMIT), 0.2–0.5 ms of
 * keyferryd's CPU per provisioned device (docs/performance.md). Now each device row counts its
 * enrollments (`enrollment_count`): an enrollment reads the count with the certificates it
 * decides on, and its one write statement updates the device's row only where the count is
 * still the one it read, adding one; every other write of that statement is made only when
 * that row was updated. READ COMMITTED judges an UPDATE's condition again on the newest version
 * of a row another transaction changed, so of two enrollments that read the same count one
 * writes and the other writes nothing and reads again (devicelink/issuance.ts). SQLite's
 * enrollments run in one BEGIN IMMEDIATE transaction, which serialises them; they leave the
 * count as it is.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .alterTable('devices')
    .addColumn('enrollment_count', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
}

import { sql } from 'kysely';
import type { Db } from '../../src/storage/database.ts';

/**
 * `n` device-link reports of other devices (`device:1001`…) and other requests (`other-1`…) in
 * factory 1, in one statement on either backend: the long audit log a busy line leaves.
 */
export async function auditFiller(db: Db, n: number): Promise<void> {
  await sql`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${sql.lit(n)})
    INSERT INTO audit_log (at, factory_id, actor, action, object, detail, correlation_id)
    SELECT '2026-12-04T11:00:00.000Z', 1, 'device:' || (1000 + i), 'device-link.report', 'device:' || (1000 + i), '{}', 'other-' || i
    FROM n`.execute(db);
}

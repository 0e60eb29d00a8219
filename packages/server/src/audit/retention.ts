import type { Logger } from 'pino';
import type { Db } from '../storage/database.ts';

/** How often keyferryd prunes the audit log past `audit.retentionDays` (besides once at start). */
export const AUDIT_PRUNE_INTERVAL_MS = 60 * 60 * 1000;

const DAY_MS = 24 * 60 * 60 * 1000;

/** Deletes audit entries older than `retentionDays` before `now`; returns how many went. */
export async function pruneAudit(db: Db, retentionDays: number, now = new Date()): Promise<number> {
  // `at` is ISO 8601 UTC text on both backends: text order is time order
  const cutoff = new Date(now.getTime() - retentionDays * DAY_MS).toISOString();
  const result = await db.deleteFrom('audit_log').where('at', '<', cutoff).executeTakeFirst();
  return Number(result.numDeletedRows);
}

/**
 * Prunes now and then every AUDIT_PRUNE_INTERVAL_MS; the timer is unref'd so it never keeps
 * the process alive. A failed prune is logged and tried again at the next interval. Returns
 * the stop function.
 */
export async function startAuditRetention(db: Db, retentionDays: number, log: Logger): Promise<() => void> {
  const prune = async () => {
    try {
      const deleted = await pruneAudit(db, retentionDays);
      if (deleted > 0)
        log.info(
          { deleted, retentionDays },
          `pruned ${deleted} audit entries older than ${retentionDays} days`,
        );
    } catch (err) {
      log.error({ err }, 'cannot prune the audit log; retrying at the next interval');
    }
  };
  await prune();
  const timer = setInterval(() => void prune(), AUDIT_PRUNE_INTERVAL_MS);
  timer.unref();
  return () => clearInterval(timer);
}

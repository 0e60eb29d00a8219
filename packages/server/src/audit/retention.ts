import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { Db } from '../storage/database.ts';

/** How often keyferryd prunes the audit log past `audit.retentionDays` (besides once at start). */
export const AUDIT_PRUNE_INTERVAL_MS = 60 * 60 * 1000;

const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * Entries one statement of a prune deletes. SQLite runs each statement on the event loop: one
 * statement deleting a million entries held it, and the device-link with it, for 1.9 s here,
 * and a line provisioning 800 devices/s writes ~9 million an hour (three a device). In
 * statements of 5,000 the same million took 202 of ~11 ms each.
 */
export const PRUNE_CHUNK = 5000;

/**
 * Deletes audit entries older than `retentionDays` before `now`, oldest first, `chunk` a
 * statement with a turn of the event loop between them; returns how many went.
 */
export async function pruneAudit(
  db: Db,
  retentionDays: number,
  now = new Date(),
  chunk = PRUNE_CHUNK,
): Promise<number> {
  // `at` is ISO 8601 UTC text on both backends: text order is time order
  const cutoff = new Date(now.getTime() - retentionDays * DAY_MS).toISOString();
  let deleted = 0;
  for (;;) {
    const oldest = db
      .selectFrom('audit_log')
      .select('id')
      .where('at', '<', cutoff)
      .orderBy('at')
      .limit(chunk);
    const result = await db.deleteFrom('audit_log').where('id', 'in', oldest).executeTakeFirst();
    const n = Number(result.numDeletedRows);
    deleted += n;
    if (n < chunk) return deleted;
    await nextTurn();
  }
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

import { crlTiming, currentCrl } from './crl-store.ts';
import type { RefreshDeps } from './refresh.ts';

/**
 * Re-signs every stored CRL whose nextUpdate is within `crl.renewBefore`, so a CRL never
 * expires on a factory where nothing is revoked for a week. Each CA is claimed in its own
 * transaction: on PostgreSQL the crls row is locked `FOR UPDATE SKIP LOCKED`, so when several
 * nodes share the database only one signs it and the others skip it (after the winner commits
 * its nextUpdate is no longer near). Returns the CA ids re-signed by this call.
 */
export async function resignDueCrls(
  deps: RefreshDeps & { dialect: 'sqlite' | 'postgres' },
  now = new Date(),
): Promise<number[]> {
  const due = () => new Date(now.getTime() + crlTiming().renewBeforeMs).toISOString();
  const candidates = await deps.db
    .selectFrom('crls')
    .select('ca_id')
    .where('next_update', '<', due())
    .execute();
  const resigned: number[] = [];
  for (const { ca_id: caId } of candidates) {
    try {
      const signed = await deps.db.transaction().execute(async (trx) => {
        let claim = trx
          .selectFrom('crls')
          .select(['ca_id', 'crl_number'])
          .where('ca_id', '=', caId)
          .where('next_update', '<', due());
        if (deps.dialect === 'postgres') claim = claim.forUpdate().skipLocked();
        const row = await claim.executeTakeFirst();
        if (!row) return false; // another node holds it, or re-signed it already
        const crl = await currentCrl({ db: trx, custody: deps.custody }, caId, now);
        return crl.crlNumber !== row.crl_number;
      });
      if (signed) resigned.push(caId);
    } catch (err) {
      deps.log.warn({ err, caId }, 'could not re-sign a CRL near its nextUpdate; retrying at the next check');
    }
  }
  if (resigned.length > 0)
    deps.log.info({ caIds: resigned }, `re-signed ${resigned.length} CRLs before their nextUpdate`);
  return resigned;
}

/** Runs {@link resignDueCrls} now and then every `intervalMs`; returns the stop function. */
export async function startCrlResign(
  deps: RefreshDeps & { dialect: 'sqlite' | 'postgres' },
  intervalMs: number,
): Promise<() => void> {
  let running: Promise<unknown> = resignDueCrls(deps);
  await running;
  const timer = setInterval(() => {
    running = running.then(() => resignDueCrls(deps));
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

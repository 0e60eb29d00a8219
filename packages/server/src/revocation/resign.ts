import type { Db } from '../storage/database.ts';
import { crlTiming, currentCrl } from './crl-store.ts';
import type { RefreshDeps } from './refresh.ts';

/**
 * Re-signs every stored CRL whose nextUpdate is within `crl.renewBefore`, so a CRL never
 * expires on a factory where nothing is revoked for a week. Each CA is claimed on its own: on
 * PostgreSQL in a transaction that locks its crls row `FOR UPDATE SKIP LOCKED`, so when several
 * nodes share the database only one signs it and the others skip it (after the winner commits
 * its nextUpdate is no longer near); on SQLite in this process ({@link claimedInProcess}).
 * Returns the CA ids re-signed by this call.
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
  const claimAndSign = async (db: Db, caId: number): Promise<boolean> => {
    let claim = db
      .selectFrom('crls')
      .select(['ca_id', 'crl_number'])
      .where('ca_id', '=', caId)
      .where('next_update', '<', due());
    if (deps.dialect === 'postgres') claim = claim.forUpdate().skipLocked();
    const row = await claim.executeTakeFirst();
    if (!row) return false; // another node holds it, or re-signed it already
    const crl = await currentCrl({ db, custody: deps.custody }, caId, now);
    return crl.crlNumber !== row.crl_number;
  };
  const resigned: number[] = [];
  for (const { ca_id: caId } of candidates) {
    try {
      const signed =
        deps.dialect === 'postgres'
          ? await deps.db.transaction().execute((trx) => claimAndSign(trx, caId))
          : await claimedInProcess(deps.db, caId, () => claimAndSign(deps.db, caId));
      if (signed) resigned.push(caId);
    } catch (err) {
      deps.log.warn({ err, caId }, 'could not re-sign a CRL near its nextUpdate; retrying at the next check');
    }
  }
  if (resigned.length > 0)
    deps.log.info({ caIds: resigned }, `re-signed ${resigned.length} CRLs before their nextUpdate`);
  return resigned;
}

/** Per SQLite database, the CAs whose CRL a {@link resignDueCrls} of this process is signing. */
const claimed = new WeakMap<Db, Set<number>>();

/**
 * SQLite: `sign` for CA `caId` unless a {@link resignDueCrls} of this process is at it already
 * (false then). One process runs the re-sign timer on a SQLite file, so this is the claim
 * PostgreSQL's row lock makes across nodes. A transaction would be one too, but it would hold
 * the file's write lock through the whole signing (~0.1 s at 60,000 entries), which the other
 * worker processes wait for with their event loops blocked; a CRL signed meanwhile by a
 * revocation is settled by the update conditional on the CRL number (crl-store.ts).
 */
async function claimedInProcess(db: Db, caId: number, sign: () => Promise<boolean>): Promise<boolean> {
  const busy = claimed.get(db) ?? new Set<number>();
  claimed.set(db, busy);
  if (busy.has(caId)) return false;
  busy.add(caId);
  try {
    return await sign();
  } finally {
    busy.delete(caId);
  }
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

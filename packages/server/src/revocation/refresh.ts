import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { onCertificatesRevoked, type RevocationDeps } from './crl-store.ts';

/** What re-signing after a revocation needs: the CRL's dependencies and a log for failures. */
export type RefreshDeps = RevocationDeps & { log: Logger };

/**
 * Re-signs the CRL of each CA whose certificates were just revoked, and returns when they are
 * signed; call it after the revoking transaction commits. Best effort: a failure is logged,
 * not surfaced, because the revocation is already stored and the CRL is rebuilt lazily on its
 * next read anyway.
 */
export async function refreshCrls(deps: RefreshDeps, caIds: Iterable<number>): Promise<void> {
  for (const caId of new Set(caIds)) await refreshOne(deps, caId);
}

async function refreshOne(deps: RefreshDeps, caId: number): Promise<void> {
  try {
    await onCertificatesRevoked(deps, caId);
  } catch (err) {
    deps.log.warn(
      { err, caId },
      'could not re-sign the CRL after a revocation; it is rebuilt on its next read',
    );
  }
}

/** A CA's CRL rests this many times its last re-sign's duration before the next (a tenth of the time). */
export const REST_PER_RESIGN = 9;

/**
 * Re-signs CRLs after revocations without holding up the request that revoked: a device's
 * rekey or the report that ends its rotation answers as soon as its revocation commits. A CRL
 * lists every certificate its CA revoked, tens of thousands in a fleet that renews, so signing
 * one costs far more than the request; a fleet rotating at once would otherwise sign one per
 * device inside each device's request. A revocation is re-signed at once; then the CA's CRL
 * rests for {@link REST_PER_RESIGN} times that re-sign's duration, and every revocation
 * scheduled meanwhile goes into one re-sign at the rest's end. While a fleet keeps revoking,
 * signing its CA's CRL so takes at most a tenth of the process's time however long the CRL
 * grows, and the CRL lags the revocations by at most about ten re-signs' time (a CRL of 60,000
 * entries: ~1 s). A CRL read in between rebuilds it itself (crl-store.ts, currentCrl).
 */
export class CrlRefresher {
  readonly #deps: RefreshDeps;
  readonly #restPerResign: number;
  readonly #running = new Map<number, Promise<void>>();
  readonly #again = new Set<number>();
  /** Aborted by {@link settled}: the rests end at once, the re-signs still pending run. */
  #hurry = new AbortController();

  constructor(deps: RefreshDeps, restPerResign = REST_PER_RESIGN) {
    this.#deps = deps;
    this.#restPerResign = restPerResign;
  }

  /** Schedules the re-sign of each CA's CRL; returns at once. */
  schedule(caIds: Iterable<number>): void {
    for (const caId of new Set(caIds)) {
      if (this.#running.has(caId)) this.#again.add(caId);
      else this.#running.set(caId, this.#run(caId));
    }
  }

  /**
   * Resolves when every re-sign scheduled so far is signed; the rests are cut short, so this
   * waits for signing, never for a rest (shutdown waits for it before closing the database).
   */
  async settled(): Promise<void> {
    this.#hurry.abort();
    while (this.#running.size > 0) await Promise.all(this.#running.values());
    this.#hurry = new AbortController();
  }

  async #run(caId: number): Promise<void> {
    // the first await lets schedule() record this run before it can end
    await Promise.resolve();
    try {
      for (;;) {
        this.#again.delete(caId);
        const began = performance.now();
        await refreshOne(this.#deps, caId);
        // the rest: what is scheduled meanwhile waits for its end, then goes into one re-sign
        await sleep((performance.now() - began) * this.#restPerResign, undefined, {
          signal: this.#hurry.signal,
        }).catch(() => undefined);
        if (!this.#again.has(caId)) break;
      }
    } finally {
      this.#running.delete(caId);
    }
  }
}

import type { Logger } from 'pino';
import { onCertificatesRevoked, type RevocationDeps } from './crl-store.ts';

/** What re-signing after a revocation needs: the CRL's dependencies and a log for failures. */
export type RefreshDeps = RevocationDeps & { log: Logger };

/**
 * Re-signs the CRL of each CA whose certificates were just revoked; call it after the revoking
 * transaction commits. Best effort: a failure is logged, not surfaced, because the revocation
 * is already stored and the CRL is rebuilt lazily on its next read anyway.
 */
export async function refreshCrls(deps: RefreshDeps, caIds: Iterable<number>): Promise<void> {
  for (const caId of new Set(caIds)) {
    try {
      await onCertificatesRevoked(deps, caId);
    } catch (err) {
      deps.log.warn(
        { err, caId },
        'could not re-sign the CRL after a revocation; it is rebuilt on its next read',
      );
    }
  }
}

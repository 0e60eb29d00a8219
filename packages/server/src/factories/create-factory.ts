import { recordAudit } from '../audit/audit-log.ts';
import type { ServiceContext } from '../context.ts';
import { enableEl2g } from '../el2g/enablement.ts';
import { setupFactoryPki } from '../pki/factory-pki.ts';
import { type Factory, insertFactory } from './factories.ts';

/**
 * Creates a factory with everything it needs from birth (repo id, subdomain, the gateway's
 * TLS key and CSR) in one transaction.
 */
export async function createFactory(
  ctx: Pick<ServiceContext, 'database' | 'tlsKeys' | 'config'>,
  name: string,
  context: { actor: string; correlationId: string },
): Promise<Factory> {
  const now = new Date();
  return ctx.database.db.transaction().execute(async (trx) => {
    const factory = await insertFactory(trx, name, now);
    await setupFactoryPki(trx, ctx.tlsKeys, factory, ctx.config.domain, now);
    await enableEl2g(trx, ctx.config, factory, now);
    await recordAudit(
      trx,
      {
        factoryId: factory.id,
        actor: context.actor,
        action: 'factory.create',
        object: `factory:${name}`,
        detail: { repoId: factory.repoId, subdomain: factory.subdomain },
        correlationId: context.correlationId,
      },
      now,
    );
    return factory;
  });
}

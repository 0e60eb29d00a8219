import type { FastifyInstance } from 'fastify';
import type { ServiceContext } from '../../context.ts';
import { authenticate, principalFactory } from '../auth.ts';

/** GET /ota/factories/: the factories this token can see (one: tokens are factory-scoped). */
export async function factoriesRoutes(app: FastifyInstance, ctx: ServiceContext): Promise<void> {
  app.get('/ota/factories/', async (request) => {
    const principal = await authenticate(ctx.database.db, request);
    const factory = await principalFactory(ctx.database.db, principal);
    return factory ? [{ name: factory.name, 'repo-id': factory.repoId }] : [];
  });
}

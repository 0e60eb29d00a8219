import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { ServiceContext } from '../context.ts';
import { authorizeFactory } from './auth.ts';
import { sendProblem } from './problem.ts';
import { auditRoutes } from './routes/audit.ts';
import { certsRoutes } from './routes/certs.ts';
import { factoriesRoutes } from './routes/factories.ts';
import { healthRoutes } from './routes/health.ts';

export const CORRELATION_HEADER = 'x-correlation-id';

/** The management API: health, factory list, and the routes scoped to one factory. */
export async function buildManagementApi(ctx: ServiceContext): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: ctx.log.child({ listener: 'api' }) as FastifyBaseLogger,
    bodyLimit: ctx.config.api.bodyLimitBytes,
    genReqId: () => randomUUID(),
    routerOptions: { ignoreTrailingSlash: true },
  });
  app.addHook('onRequest', async (request, reply) => {
    reply.header(CORRELATION_HEADER, request.id);
  });
  app.setErrorHandler((err, request, reply) => sendProblem(request, reply, err));
  app.setNotFoundHandler((request, reply) =>
    sendProblem(request, reply, Object.assign(new Error('not found'), { statusCode: 404 })),
  );

  await healthRoutes(app, ctx);
  await factoriesRoutes(app, ctx);
  await app.register(
    async (scoped) => {
      scoped.addHook('onRequest', async (request) => {
        const { factory } = request.params as { factory: string };
        await authorizeFactory(ctx.database.db, request, factory);
      });
      await certsRoutes(scoped, ctx);
      await auditRoutes(scoped, ctx);
    },
    { prefix: '/ota/factories/:factory' },
  );
  return app;
}

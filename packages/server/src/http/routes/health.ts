import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import type { ServiceContext } from '../../context.ts';

/**
 * Liveness answers while the process runs; readiness also needs the database; /metrics is the
 * Prometheus text of the service (no token, like the health checks: docs/deployment.md).
 */
export async function healthRoutes(app: FastifyInstance, ctx: ServiceContext): Promise<void> {
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/metrics', async (_request, reply) => {
    if (!ctx.metrics) return reply.code(404).send();
    const { contentType, body } = await ctx.metrics.text();
    return reply.type(contentType).send(body);
  });
  app.get('/readyz', async (_request, reply) => {
    try {
      await sql`select 1`.execute(ctx.database.db);
      return { status: 'ready', storage: ctx.database.dialect };
    } catch {
      return reply.code(503).send({ status: 'unavailable', reason: 'database not reachable' });
    }
  });
}

import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import type { ServiceContext } from '../../context.ts';

/**
 * Liveness answers while the process runs; readiness also needs the database, the key custody
 * and every listener bound; /metrics is the
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
    const problems = await readinessProblems(ctx);
    if (problems.length > 0)
      return reply.code(503).send({ status: 'unavailable', reason: problems.join('; ') });
    return { status: 'ready', storage: ctx.database.dialect, custody: ctx.custody.backend };
  });
}

/**
 * Why this keyferryd should not get traffic: its database does not answer, its key custody
 * cannot use the stored keys (HSM gone, token logged out), or its listeners are not (or no
 * longer) all bound. Empty when ready.
 */
async function readinessProblems(ctx: ServiceContext): Promise<string[]> {
  const problems: string[] = [];
  try {
    await sql`select 1`.execute(ctx.database.db);
  } catch {
    problems.push('database not reachable');
    return problems; // custody's check reads the database too
  }
  try {
    await ctx.custody.verifyAccess(ctx.database.db);
  } catch {
    problems.push(`key custody (${ctx.custody.backend}) cannot use the stored keys`);
  }
  if (ctx.lifecycle && !ctx.lifecycle.serving) problems.push('listeners not bound (starting or stopping)');
  return problems;
}

import { createHash, randomUUID } from 'node:crypto';
import type { TlsOptions } from 'node:tls';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { BulkJobRunner, type JobRunnerOptions } from '../allowlist/bulk-jobs.ts';
import type { ServiceContext } from '../context.ts';
import { authorizeFactory, presentedToken } from './auth.ts';
import { answerClientErrorsAsProblems } from './client-errors.ts';
import { applyConnectionLimits, serverTimeoutOptions } from './connection-limits.ts';
import { cutAfterGrace } from './listen.ts';
import { sendProblem, toKeyferryError } from './problem.ts';
import { TokenBuckets } from './rate-limit.ts';
import { recordRoutes } from './route-table.ts';
import { auditRoutes } from './routes/audit.ts';
import { certsRoutes } from './routes/certs.ts';
import { consoleRoutes } from './routes/console.ts';
import { crlRoutes } from './routes/crl.ts';
import { el2gRoutes } from './routes/el2g.ts';
import { el2gDevicesRoutes } from './routes/el2g-devices.ts';
import { el2gProxyRoutes } from './routes/el2g-proxy.ts';
import { el2gProxyDevicesRoutes } from './routes/el2g-proxy-devices.ts';
import { factoriesRoutes } from './routes/factories.ts';
import { gatewayDevicesRoutes } from './routes/gateway-devices.ts';
import { healthRoutes } from './routes/health.ts';
import { openapiRoutes } from './routes/openapi.ts';
import { tokensRoutes } from './routes/tokens.ts';

export const CORRELATION_HEADER = 'x-correlation-id';

/** The management API: health, factory list, and the routes scoped to one factory. */
export async function buildManagementApi(
  ctx: ServiceContext,
  https?: TlsOptions | undefined,
  jobOptions: JobRunnerOptions = {},
): Promise<FastifyInstance> {
  const { limits } = ctx.config.api;
  const log = ctx.log.child({ listener: 'api' });
  const timeouts = serverTimeoutOptions(limits);
  const app = Fastify({
    ...(https ? { https: { ...https, ...timeouts, handshakeTimeout: limits.handshakeTimeoutMs } } : {}),
    http: timeouts,
    connectionTimeout: limits.idleTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    loggerInstance: log as FastifyBaseLogger,
    bodyLimit: ctx.config.api.bodyLimitBytes,
    // request.protocol / host / ip from X-Forwarded-* (api.trustProxy: only behind a proxy).
    // One hop: the address the proxy saw (the last X-Forwarded-For entry), not whatever a
    // client put before it, which HAProxy's `option forwardfor` keeps
    trustProxy: ctx.config.api.trustProxy ? (_address: string, hop: number) => hop === 0 : false,
    genReqId: () => randomUUID(),
    routerOptions: { ignoreTrailingSlash: true },
    // bad percent-encoding, over-long path segments: the same problems as every other refusal
    frameworkErrors: (err, request, reply) => {
      reply.header(CORRELATION_HEADER, request.id);
      return sendProblem(request, reply, err);
    },
  }) as unknown as FastifyInstance;
  // JSON only: Fastify's own text/plain parser handed a JSON body sent as text/plain to the
  // schemas as a string, refused as "expected object" instead of 415 "send application/json"
  app.removeContentTypeParser('text/plain');
  applyConnectionLimits(app.server, limits, log);
  answerClientErrorsAsProblems(app.server, limits, log);
  recordRoutes(app);
  // api.rateLimits.perToken, keyed by a hash of whatever token is presented (valid or not),
  // before the token is looked up: guessing tokens is limited too
  const perToken = new TokenBuckets(ctx.config.api.rateLimits.perToken);
  app.addHook('onRequest', async (request, reply) => {
    reply.header(CORRELATION_HEADER, request.id);
    const token = presentedToken(request);
    if (token !== undefined) {
      perToken.admit(createHash('sha256').update(token).digest('base64'), 'api.rateLimits.perToken');
    }
  });
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    ctx.metrics?.request('api', route, request.method, reply.statusCode, reply.elapsedTime / 1000);
  });
  app.setErrorHandler((err, request, reply) => {
    const error = toKeyferryError(err, request.log);
    ctx.metrics?.refused('api', error.code);
    return sendProblem(request, reply, error);
  });
  app.setNotFoundHandler((request, reply) =>
    sendProblem(request, reply, Object.assign(new Error('not found'), { statusCode: 404 })),
  );

  // Fastify's close waits for every request in flight, and Node checks no request timeout once
  // the server closes: a client dripping a body held keyferryd's stop for ever. What is still
  // open after the grace period is cut, as on the device-link and the gateway (drainOnClose),
  // and a request in flight is answered with `Connection: close`, as there: its client learns
  // that this connection ends, rather than finding it closed under its next request.
  let stopping = false;
  app.addHook('preClose', async () => {
    stopping = true;
    cutAfterGrace(app.server, () => app.server.closeAllConnections());
  });
  app.addHook('onSend', async (_request, reply, payload) => {
    if (stopping) reply.header('connection', 'close');
    return payload;
  });

  // One runner for the API's bulk jobs and the console's file imports; closing the app stops both.
  const jobs = new BulkJobRunner(ctx, jobOptions);
  app.addHook('onClose', async () => jobs.close());

  await healthRoutes(app, ctx);
  await openapiRoutes(app);
  await factoriesRoutes(app, ctx);
  await crlRoutes(app, ctx);
  await app.register(
    async (scoped) => {
      scoped.addHook('onRequest', async (request) => {
        const { factory } = request.params as { factory: string };
        await authorizeFactory(ctx.database.db, request, factory);
      });
      await certsRoutes(scoped, ctx);
      await auditRoutes(scoped, ctx);
      await el2gRoutes(scoped, ctx);
      await el2gProxyRoutes(scoped, ctx);
      await el2gDevicesRoutes(scoped, ctx);
      await el2gProxyDevicesRoutes(scoped, ctx, jobs);
      await gatewayDevicesRoutes(scoped, ctx);
      await tokensRoutes(scoped, ctx);
    },
    { prefix: '/ota/factories/:factory' },
  );
  await consoleRoutes(app, ctx, jobs);
  return app;
}

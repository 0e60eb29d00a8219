import { readFileSync } from 'node:fs';
import { KeyferryError, MAX_ID_FILE_BYTES, parseIdFile } from '@keyferry/core';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { BulkJobRunner } from '../../allowlist/bulk-jobs.ts';
import { getBulkJob, MAX_JOB_DEVICES } from '../../allowlist/bulk-jobs.ts';
import {
  deviceCertificates,
  deviceProvisionings,
  findAllowListedDevice,
} from '../../allowlist/device-provisioning.ts';
import { fileImportSummary, linesOf } from '../../allowlist/file-import.ts';
import { DEVICE_STATES, searchDevices } from '../../allowlist/fleet-status.ts';
import { deviceTimeline } from '../../audit/audit-log.ts';
import type { ServiceContext } from '../../context.ts';
import { listDeviceGroups } from '../../el2g/group-assignments.ts';
import { productCatalogue } from '../../el2g/products.ts';
import { authenticateToken, type Principal } from '../../tokens/api-tokens.ts';
import { principalFactory } from '../auth.ts';
import { clientWentAway } from '../client-errors.ts';
import {
  assertCsrf,
  assertSameOrigin,
  assertWriteScope,
  requireSession,
  SIGN_IN_PATH,
  viewerOf,
} from '../console/console-auth.ts';
import { devicePage, devicesPage } from '../console/device-pages.ts';
import { EventStreams } from '../console/event-streams.ts';
import type { SafeHtml } from '../console/html.ts';
import { importPage } from '../console/import-page.ts';
import { errorPage, signInPage } from '../console/layout.ts';
import { loadOverview, overviewPage } from '../console/overview-page.ts';
import {
  ConsoleSessions,
  clearedCookieHeader,
  rememberImport,
  sessionCookie,
  sessionCookieHeader,
} from '../console/sessions.ts';
import { logRequestFailure, sendProblem, toKeyferryError } from '../problem.ts';
import { rateLimited, retryAfterHeader, TokenBuckets } from '../rate-limit.ts';
import { decimalQuery, MAX_ROW_ID, parseBody } from '../validate.ts';

export const CONSOLE_PREFIX = '/console';
/** A sign-in form is one token; anything much larger is not a sign-in. */
const SIGN_IN_BODY_LIMIT = 4 * 1024;
const ASSETS_DIR = new URL('../console/assets/', import.meta.url);
const ASSET_TYPES: Record<string, string> = {
  'console.css': 'text/css; charset=utf-8',
  'console.js': 'text/javascript; charset=utf-8',
};
/** Scripts, styles and data only from this origin; no framing, no inline code. */
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const signInSchema = z.strictObject({ token: z.string().max(200) });
/** A sign-in with no token gets authenticateToken's generic answer, not its API wording. */
const NOT_VALID = 'the API token is not valid: check it, or create a new one';
const devicesQuery = z.strictObject({
  q: z.string().max(100).optional(),
  group: z.string().max(100).optional(),
  product: z.string().max(12).optional(),
  state: z.enum(DEVICE_STATES).or(z.literal('')).optional(),
  after: decimalQuery(0, MAX_ROW_ID).optional(),
});
const importQuery = z.strictObject({
  product: z.string().regex(/^[0-9]{12}$/, 'a 12NC is 12 decimal digits, e.g. 935389312472'),
  production: z.enum(['true', 'false']).default('false'),
});
const jobParam = z.object({ id: z.string().uuid('an import id is a UUID') });
const deviceParam = z.object({ id: z.string().max(100) });

function sendPage(reply: FastifyReply, page: SafeHtml, status = 200): FastifyReply {
  return reply.code(status).type('text/html; charset=utf-8').send(page.text);
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** What a console route answers, a page or JSON: its refusals come the same way. */
    consoleAnswer?: 'page' | 'json';
  }
}
const AS_PAGE = { config: { consoleAnswer: 'page' } } as const;
const AS_JSON = { config: { consoleAnswer: 'json' } } as const;

function wantsHtml(request: FastifyRequest): boolean {
  return (request.headers.accept ?? '').includes('text/html');
}

/**
 * Whether a refusal is sent as a page: as the route's own answer is, whatever Accept says (a
 * page's refusal is a page for any client, an import's is JSON even to a browser); where a
 * route has no one kind of answer (assets, the event stream, an unknown address), as the
 * client asks: a page to a browser (Accept: text/html), problem+json to anything else.
 */
function refusesWithPage(request: FastifyRequest): boolean {
  const answer = request.routeOptions.config?.consoleAnswer;
  return answer === undefined ? wantsHtml(request) : answer === 'page';
}

const blank = (s: string | undefined) => (s === undefined || s === '' ? undefined : s);

const IMPORT_PATH = `${CONSOLE_PREFIX}/import`;

/**
 * A console refusal in the console's words: an import over the file limit is told as such (the
 * parser refuses it before parseIdFile could), not as Fastify's generic body limit.
 */
function consoleError(err: unknown, request: FastifyRequest): KeyferryError {
  if (
    (err as FastifyError)?.code === 'FST_ERR_CTP_BODY_TOO_LARGE' &&
    request.routeOptions.url === IMPORT_PATH
  ) {
    return new KeyferryError(
      'body_too_large',
      `${fileNameOf(request.headers['x-file-name'])} is larger than ${MAX_ID_FILE_BYTES} bytes, the most one import takes: split it into several files`,
    );
  }
  return toKeyferryError(err, request.log);
}

/**
 * The web console (docs/console.md) under /console/: server-rendered pages over the same
 * domain services as the API, a session cookie instead of the token, one event stream.
 */
export async function consoleRoutes(
  app: FastifyInstance,
  ctx: ServiceContext,
  jobs: BulkJobRunner,
): Promise<void> {
  const db = ctx.database.db;
  const assets = new Map(
    Object.keys(ASSET_TYPES).map((name) => [name, readFileSync(new URL(name, ASSETS_DIR))]),
  );
  const sessions = new ConsoleSessions();
  const streams = new EventStreams(db, app.log, sessions);
  // per client address before the token is looked up (guessing is limited), per token once its
  // secret matched (one token cannot churn sessions)
  const { rateLimits } = ctx.config.api;
  const signInPerAddress = new TokenBuckets(rateLimits.signInPerAddress);
  const signInPerToken = new TokenBuckets(rateLimits.signInPerToken);
  app.addHook('preClose', async () => streams.closeAll());

  await app.register(
    async (c) => {
      c.addContentTypeParser(
        'application/x-www-form-urlencoded',
        { parseAs: 'string', bodyLimit: SIGN_IN_BODY_LIMIT },
        (_request, body, done) => done(null, Object.fromEntries(new URLSearchParams(body as string))),
      );
      c.addContentTypeParser(
        'application/octet-stream',
        { parseAs: 'buffer', bodyLimit: MAX_ID_FILE_BYTES },
        (_request, body, done) => done(null, body),
      );
      // any other type reaches the route, which names the one it takes (Fastify's own refusal
      // said "send application/json"); the body is not read
      c.addContentTypeParser('*', (_request, _payload, done) => done(null, undefined));
      c.addHook('onRequest', async (_request, reply) => {
        reply.header('content-security-policy', CSP);
        reply.header('x-content-type-options', 'nosniff');
        // not no-referrer: under it a browser sends `Origin: null` even on same-origin forms
        reply.header('referrer-policy', 'same-origin');
        reply.header('cache-control', 'no-store');
      });
      c.setErrorHandler((err, request, reply) => {
        const error = consoleError(err, request);
        if (!refusesWithPage(request) || clientWentAway(err, request.raw))
          return sendProblem(request, reply, error.expose ? error : err);
        if (!error.expose) {
          // a page that failed: a page too, saying what the log holds (never the cause itself)
          logRequestFailure(request, err);
          const message = `keyferryd could not make this page (an internal error): try again; if it persists, quote correlation id ${request.id} to whoever runs keyferryd, whose log has the cause`;
          return sendPage(reply, errorPage(viewerOf(request), 'Internal error', message), 500);
        }
        request.log.info({ code: error.code, msg: error.message }, 'request refused');
        const retryAfter = retryAfterHeader(error);
        if (retryAfter) reply.header('Retry-After', retryAfter);
        return sendPage(reply, errorPage(viewerOf(request), error.code, error.message), error.status);
      });

      // a mistyped console address: a page to a browser (with the way to the overview), the
      // API's problem+json to anything else, with the headers of every console answer
      c.setNotFoundHandler(async (request) => {
        const path = request.url.split('?')[0]!.slice(0, 200);
        throw new KeyferryError(
          'not_found',
          `there is no console page at ${path}: check the address, or start from the overview at ${CONSOLE_PREFIX}/`,
        );
      });

      c.get('/assets/:name', async (request, reply) => {
        const { name } = parseBody(z.object({ name: z.string().max(40) }), request.params, 'path');
        const body = assets.get(name);
        if (!body) throw new KeyferryError('not_found', `no console asset ${name}`);
        return reply.type(ASSET_TYPES[name]!).header('cache-control', 'no-cache').send(body);
      });

      c.get('/sign-in', AS_PAGE, async (_request, reply) => sendPage(reply, signInPage()));

      c.post('/sign-in', AS_PAGE, async (request, reply) => {
        assertSameOrigin(request);
        const refuse = (error: KeyferryError) => {
          request.log.info({ code: error.code, msg: error.message }, 'sign-in refused');
          const retryAfter = retryAfterHeader(error);
          if (retryAfter) reply.header('Retry-After', retryAfter);
          return sendPage(reply, signInPage(error.message), error.status);
        };
        const waitMs = signInPerAddress.take(request.ip);
        if (waitMs > 0) {
          return refuse(rateLimited('api.rateLimits.signInPerAddress', rateLimits.signInPerAddress, waitMs));
        }
        const { token } = parseBody(signInSchema, request.body, 'sign-in form');
        let principal: Principal;
        try {
          principal = await authenticateToken(db, token);
        } catch (err) {
          if (!(err instanceof KeyferryError) || err.code !== 'unauthenticated') throw err;
          // authenticateToken names a revoked or expired token only to whoever holds its secret
          return refuse(token.trim() === '' ? new KeyferryError('unauthenticated', NOT_VALID) : err);
        }
        const tokenWait = signInPerToken.take(principal.tokenId);
        if (tokenWait > 0) {
          return refuse(rateLimited('api.rateLimits.signInPerToken', rateLimits.signInPerToken, tokenWait));
        }
        if (!principal.scopes.has('read')) {
          return refuse(
            new KeyferryError(
              'forbidden',
              'this token lacks the "read" scope the console needs to show anything: use a read or write token',
            ),
          );
        }
        if (!(await principalFactory(db, principal))) {
          throw new KeyferryError('unauthenticated', 'the factory of this token no longer exists');
        }
        let id: string;
        try {
          id = sessions.create(principal).id;
        } catch (err) {
          if (err instanceof KeyferryError) return refuse(err);
          throw err;
        }
        return reply
          .code(303)
          .header('set-cookie', sessionCookieHeader(id, request.protocol === 'https'))
          .header('location', `${CONSOLE_PREFIX}/`)
          .send();
      });

      await c.register(async (s) => {
        s.addHook('onRequest', async (request, reply) => requireSession(db, sessions, request, reply));
        s.addHook('preHandler', async (request) => assertCsrf(request));

        s.post('/sign-out', AS_PAGE, async (request, reply) => {
          sessions.end(sessionCookie(request.headers.cookie));
          return reply
            .code(303)
            .header('set-cookie', clearedCookieHeader())
            .header('location', SIGN_IN_PATH)
            .send();
        });

        s.get('/', AS_PAGE, async (request, reply) =>
          sendPage(reply, overviewPage(viewerOf(request)!, await loadOverview(db, request.factory!))),
        );

        s.get('/events', async (request, reply) =>
          streams.open(request, reply, request.factory!, sessionCookie(request.headers.cookie)!),
        );

        s.get('/devices', AS_PAGE, async (request, reply) => {
          const q = parseBody(devicesQuery, request.query, 'query string');
          const filter = {
            ...(blank(q.q) ? { id: q.q! } : {}),
            ...(blank(q.group) ? { group: q.group! } : {}),
            ...(blank(q.product) ? { nc12: q.product! } : {}),
            ...(q.state ? { state: q.state } : {}),
          };
          const factoryId = request.factory!.id;
          const groups = (await listDeviceGroups(db, factoryId)).map((g) => g.name);
          const products = [...productCatalogue(ctx.config).values()];
          try {
            const found = await searchDevices(db, factoryId, filter, {
              ...(q.after !== undefined ? { after: q.after } : {}),
            });
            const view = { filter, groups, products, ...found, paged: q.after !== undefined };
            return sendPage(reply, devicesPage(viewerOf(request)!, view));
          } catch (err) {
            if (!(err instanceof KeyferryError) || err.code !== 'invalid_device_id') throw err;
            const view = {
              filter,
              groups,
              products,
              devices: [],
              next: null,
              paged: false,
              error: err.message,
            };
            return sendPage(reply, devicesPage(viewerOf(request)!, view), err.status);
          }
        });

        s.get('/devices/:id', AS_PAGE, async (request, reply) => {
          const { id } = parseBody(deviceParam, request.params, 'path');
          const factoryId = request.factory!.id;
          const device = await findAllowListedDevice(db, factoryId, id);
          const view = {
            deviceId: device.deviceId,
            group: device.group,
            nc12: device.nc12,
            objects: await deviceProvisionings(db, device),
            certificates: await deviceCertificates(db, device),
            timeline: await deviceTimeline(db, factoryId, device.deviceId),
          };
          return sendPage(reply, devicePage(viewerOf(request)!, view));
        });

        s.get('/import', AS_PAGE, async (request, reply) =>
          sendPage(reply, importPage(viewerOf(request)!, [...productCatalogue(ctx.config).values()])),
        );

        s.post('/import', AS_JSON, async (request, reply) => {
          assertWriteScope(request);
          const q = parseBody(importQuery, request.query, 'query string');
          if (!Buffer.isBuffer(request.body)) {
            const sent = request.headers['content-type'];
            throw new KeyferryError(
              'unsupported_media_type',
              `the file came as ${sent ? `Content-Type ${sent}` : 'no Content-Type'}: send it as application/octet-stream (the import page does)`,
            );
          }
          const name = fileNameOf(request.headers['x-file-name']);
          const file = parseIdFile(name, request.body);
          if (file.ids.length > MAX_JOB_DEVICES) {
            throw new KeyferryError(
              'invalid_request',
              `${name} has ${file.ids.length} device ids; one console import takes at most ${MAX_JOB_DEVICES}: split it into files of at most ${MAX_JOB_DEVICES} ids, or add it with keyferry el2g devices add ${q.product} --file ${name}, which sends it in batches`,
            );
          }
          const job = await jobs.submit(
            request.factory!,
            {
              nc12: q.product,
              production: q.production === 'true',
              deviceIds: file.ids.map((i) => i.decimal),
            },
            { actor: `token:${request.principal!.tokenId}`, correlationId: request.id },
          );
          const entry = {
            jobId: job.id,
            file: { invalid: file.invalid, duplicates: file.duplicates },
            lines: linesOf(file),
          };
          rememberImport(request.consoleSession!, job.id, entry);
          return reply.code(202).send({ id: job.id, ...fileImportSummary(entry.file, entry.lines, job) });
        });

        s.get('/import/:id', AS_JSON, async (request) => {
          const { id } = parseBody(jobParam, request.params, 'path');
          const entry = request.consoleSession!.imports.get(id);
          if (!entry)
            throw new KeyferryError('not_found', `import ${id} is not one of this session's imports`);
          const job = await getBulkJob(db, request.factory!.id, entry.jobId);
          return { id, ...fileImportSummary(entry.file, entry.lines, job) };
        });
      });
    },
    { prefix: CONSOLE_PREFIX },
  );
}

/**
 * The name of an imported file as the page sends it (X-File-Name, percent-encoded UTF-8), for the
 * job's messages; a name that does not decode is used as it came.
 */
function fileNameOf(header: string | string[] | undefined): string {
  const raw = typeof header === 'string' ? header : 'the file';
  try {
    return decodeURIComponent(raw).slice(0, 200);
  } catch {
    return raw.slice(0, 200);
  }
}

import { KeyferryError } from '@keyferry/core';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { databaseRefusal } from '../storage/database-unreachable.ts';
import type { ErrorLog } from '../storage/storage-full.ts';
import { clientWentAway } from './client-errors.ts';
import { retryAfterHeader } from './rate-limit.ts';

/** Fastify's own request errors mapped onto keyferry codes, so clients see one vocabulary. */
const FASTIFY_CODES: Record<string, [KeyferryError['code'], string]> = {
  FST_ERR_CTP_INVALID_JSON_BODY: ['invalid_json', 'the request body is not valid JSON'],
  FST_ERR_CTP_EMPTY_JSON_BODY: ['invalid_json', 'the request body is empty but Content-Type says JSON'],
  FST_ERR_CTP_BODY_TOO_LARGE: ['body_too_large', 'the request body is larger than this server accepts'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [
    'unsupported_media_type',
    'unsupported Content-Type: send application/json',
  ],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: ['invalid_request', 'Content-Length does not match the body'],
  FST_ERR_BAD_URL: [
    'invalid_request',
    'the URL is not valid percent-encoding: encode reserved and non-ASCII characters as %XX',
  ],
  FST_ERR_MAX_PARAM_LENGTH: [
    'url_too_long',
    'a path segment is longer than 100 characters; no keyferry id or name is that long',
  ],
  FST_ERR_ASYNC_CONSTRAINT: ['invalid_request', 'the request does not match any route constraint'],
};

/**
 * The keyferry error for whatever a request's handling threw. A full disk (SQLite's
 * SQLITE_FULL, a file's ENOSPC, PostgreSQL's 53100), also under an internal error that wraps
 * it, is the StorageFullError refusal; a PostgreSQL that is down, restarting or not reachable
 * is the DatabaseUnreachableError one; one busy past keyferryd's bounds (a lock held past
 * lock_timeout, a statement past statement_timeout, no pool connection free in time) is the
 * DatabaseBusyError one. Each is reported to `log` once per burst.
 */
export function toKeyferryError(err: unknown, log?: ErrorLog): KeyferryError {
  if (err instanceof KeyferryError && err.expose) return err;
  const refused = databaseRefusal(err, log);
  if (refused) return refused;
  if (err instanceof KeyferryError) return err;
  const fe = err as FastifyError;
  const mapped = fe?.code ? FASTIFY_CODES[fe.code] : undefined;
  if (mapped) return new KeyferryError(mapped[0], mapped[1]);
  if (fe?.statusCode === 400 && err instanceof SyntaxError) {
    return new KeyferryError('invalid_json', `the request body is not valid JSON: ${fe.message}`);
  }
  if (fe?.statusCode === 404) return new KeyferryError('not_found', 'no such resource');
  return new KeyferryError('internal', 'internal error', { cause: err });
}

/**
 * The application/problem+json body of a refusal, the same on every listener (management API,
 * device-link, gateway, and the parser-level refusals of client-errors.ts). Server faults
 * expose nothing but the correlation id.
 */
export function problemBody(error: KeyferryError, correlationId: string): Record<string, unknown> {
  const body: Record<string, unknown> = {
    type: `urn:keyferry:problem:${error.code}`,
    title: error.code,
    status: error.status,
    code: error.code,
    detail: error.expose
      ? error.message
      : `internal error; quote correlation id ${correlationId} when reporting it`,
    correlationId,
  };
  if (error.expose && error.detail) body.info = error.detail;
  return body;
}

/** A request that failed inside keyferryd (not a refusal): the cause, for the log only. */
export function logRequestFailure(request: FastifyRequest, err: unknown): void {
  request.log.error({ err: err instanceof Error ? err : new Error(String(err)) }, 'request failed');
}

/** Renders an error as application/problem+json; the log gets the whole error. */
export function sendProblem(request: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply {
  // a client that hung up (or was cut off by a timeout) is no fault of the service, and any
  // client can cause it: debug only, and nothing to answer
  if (clientWentAway(err, request.raw)) {
    request.log.debug({ code: (err as NodeJS.ErrnoException).code }, 'client went away');
    return reply.code(400).send();
  }
  const error = toKeyferryError(err);
  if (error.expose) request.log.info({ code: error.code, msg: error.message }, 'request refused');
  else logRequestFailure(request, err);
  const retryAfter = retryAfterHeader(error);
  if (retryAfter) reply.header('Retry-After', retryAfter);
  return reply.code(error.status).type('application/problem+json').send(problemBody(error, request.id));
}

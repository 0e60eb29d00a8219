import { KeyferryError } from '@keyferry/core';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';

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
};

export function toKeyferryError(err: unknown): KeyferryError {
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
 * Renders an error as application/problem+json. Server faults expose nothing but the
 * correlation id; the log gets the whole error.
 */
export function sendProblem(request: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply {
  const error = toKeyferryError(err);
  if (error.expose) request.log.info({ code: error.code, msg: error.message }, 'request refused');
  else request.log.error({ err: err instanceof Error ? err : new Error(String(err)) }, 'request failed');
  const body: Record<string, unknown> = {
    type: `urn:keyferry:problem:${error.code}`,
    title: error.code,
    status: error.status,
    code: error.code,
    detail: error.expose
      ? error.message
      : `internal error; quote correlation id ${request.id} when reporting it`,
    correlationId: request.id,
  };
  if (error.expose && error.detail) Object.assign(body, { info: error.detail });
  return reply.code(error.status).type('application/problem+json').send(body);
}

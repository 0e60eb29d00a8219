import type { IncomingMessage, ServerResponse } from 'node:http';
import { KeyferryError, MAX_CSR_BYTES } from '@keyferry/core';
import { problemBody } from '../http/problem.ts';
import { retryAfterHeader } from '../http/rate-limit.ts';

/**
 * Largest device-link request body: a maximal CSR in base64 with line breaks, with room to
 * spare; reports are far smaller. Bodies past it are refused with `body_too_large`.
 */
export const MAX_DEVICE_LINK_BODY = Math.ceil(MAX_CSR_BYTES / 3) * 4 * 1.05 + 512;
/** A refused oversized body is read and dropped up to this size (so the client sees the answer). */
const DRAIN_LIMIT = 4 * 1024 * 1024;

/**
 * Header names are written in their canonical case (RFC 9110 spells them so): HTTP says case
 * does not matter, but EST clients such as libest compare names byte for byte.
 */
export const CORRELATION_HEADER = 'X-Correlation-Id';

/**
 * The challenge of every 401: the device-link authenticates by TLS client certificate only
 * (RFC 7235 requires a challenge; there is no HTTP authentication scheme to offer).
 */
export const WWW_AUTHENTICATE = 'TLS-Client-Certificate realm="keyferry device-link"';

/**
 * Reads the whole body, refusing one larger than the limit (before reading it when its
 * Content-Length says so). Events rather than `for await`: leaving an async iterator early
 * destroys the socket, and the client would never see the refusal.
 */
export function readBody(req: IncomingMessage, limit = MAX_DEVICE_LINK_BODY): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? Number.NaN);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(tooLarge(limit));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        reject(tooLarge(limit));
      } else chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks));
    };
    const onError = (error: Error) => {
      cleanup();
      reject(error);
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

function tooLarge(limit: number): KeyferryError {
  return new KeyferryError(
    'body_too_large',
    `the request body is larger than ${Math.floor(limit)} bytes; a CSR is at most ${MAX_CSR_BYTES} bytes of DER (base64-encoded)`,
  );
}

/** Reads and drops what is left of a refused body (bounded), so the answer reaches the client. */
export function discardRest(req: IncomingMessage, res: ServerResponse): void {
  if (req.readableEnded) return;
  let seen = 0;
  req.on('data', (chunk: Buffer) => {
    seen += chunk.length;
    if (seen > DRAIN_LIMIT) req.socket.destroy();
  });
  req.resume();
  res.setHeader('Connection', 'close');
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  type = 'application/json',
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/** An EST answer: certs-only PKCS#7, base64 with line breaks (RFC 7030 §4.1.3, §4.2.3). */
export function sendCertsOnly(res: ServerResponse, der: Uint8Array): void {
  sendBase64(res, der, 'application/pkcs7-mime; smime-type=certs-only');
}

/** An EST body: the DER in base64, 64-column lines (RFC 7030 §4, RFC 8951). */
export function sendBase64(res: ServerResponse, der: Uint8Array, type: string): void {
  const b64 = Buffer.from(der)
    .toString('base64')
    .replace(/(.{64})/g, '$1\n');
  const text = b64.endsWith('\n') ? b64 : `${b64}\n`;
  res.writeHead(200, {
    'Content-Type': type,
    'Content-Transfer-Encoding': 'base64',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

/** application/problem+json with the stable code (the body every listener renders, problem.ts). */
export function sendProblem(res: ServerResponse, error: KeyferryError, correlationId: string): void {
  const retryAfter = retryAfterHeader(error);
  if (retryAfter) res.setHeader('Retry-After', retryAfter);
  if (error.status === 401) res.setHeader('WWW-Authenticate', WWW_AUTHENTICATE);
  const allow = error.code === 'method_not_allowed' ? error.detail?.allow : undefined;
  if (typeof allow === 'string') res.setHeader('Allow', allow);
  sendJson(res, error.status, problemBody(error, correlationId), 'application/problem+json');
}

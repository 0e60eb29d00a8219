import type { IncomingMessage, ServerResponse } from 'node:http';
import { KeyferryError, MAX_CSR_BYTES } from '@keyferry/core';

/**
 * Largest device-link request body: a maximal CSR in base64 with line breaks, with room to
 * spare; reports are far smaller. Bodies past it are refused with `body_too_large`.
 */
export const MAX_DEVICE_LINK_BODY = Math.ceil(MAX_CSR_BYTES / 3) * 4 * 1.05 + 512;
/** A refused oversized body is read and dropped up to this size (so the client sees the answer). */
const DRAIN_LIMIT = 4 * 1024 * 1024;

export const CORRELATION_HEADER = 'x-correlation-id';

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
  res.setHeader('connection', 'close');
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  type = 'application/json',
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** An EST answer: certs-only PKCS#7, base64 with line breaks (RFC 7030 §4.1.3, §4.2.3). */
export function sendCertsOnly(res: ServerResponse, der: Uint8Array): void {
  const b64 = Buffer.from(der)
    .toString('base64')
    .replace(/(.{64})/g, '$1\n');
  const text = b64.endsWith('\n') ? b64 : `${b64}\n`;
  res.writeHead(200, {
    'content-type': 'application/pkcs7-mime; smime-type=certs-only',
    'content-transfer-encoding': 'base64',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

/** application/problem+json with the stable code; server faults expose only the correlation id. */
export function sendProblem(res: ServerResponse, error: KeyferryError, correlationId: string): void {
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
  if (error.code === 'rate_limited') res.setHeader('retry-after', '60');
  sendJson(res, error.status, body, 'application/problem+json');
}

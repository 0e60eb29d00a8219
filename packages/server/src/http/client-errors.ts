import { randomUUID } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { KeyferryError } from '@keyferry/core';
import type { Logger } from 'pino';
import type { ConnectionLimits } from './connection-limits.ts';
import { problemBody } from './problem.ts';

/**
 * True when a failure only means the client went away (closed or reset the connection
 * mid-request): nothing to answer, nothing to audit, and nothing wrong with the service.
 */
export function clientWentAway(err: unknown, req: IncomingMessage): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE') return true;
  return req.destroyed && !req.complete;
}

/** Node's limit on the request line and headers together (--max-http-header-size). */
const MAX_HEADER_BYTES = 16 * 1024;

/**
 * A refusal by Node's HTTP parser or timers (before any route runs) as a keyferry problem, or
 * undefined when the client is gone and nothing can be answered.
 */
export function clientErrorProblem(
  err: NodeJS.ErrnoException & { reason?: string },
  limits: Pick<ConnectionLimits, 'headersTimeoutMs' | 'requestTimeoutMs'>,
): KeyferryError | undefined {
  const code = err.code ?? '';
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    return new KeyferryError(
      'request_timeout',
      `the request did not arrive in time (headers within ${limits.headersTimeoutMs} ms, the whole request within ${limits.requestTimeoutMs} ms): send it without pausing`,
    );
  }
  if (code === 'HPE_HEADER_OVERFLOW') {
    return new KeyferryError(
      'headers_too_large',
      `the request line and headers are larger than ${MAX_HEADER_BYTES} bytes: send fewer or shorter headers`,
    );
  }
  // Anything else that is not the HTTP parser's (a reset, a failed or timed-out TLS handshake,
  // which https forwards here too) has no HTTP connection to answer on.
  if (!code.startsWith('HPE_')) return undefined;
  const why = (err.reason ?? err.message).replace(/[^\x20-\x7e]/g, '?');
  return new KeyferryError(
    'invalid_request',
    `the request is not valid HTTP/1.1 (${why}): check the request line, header names and values (no control characters) and the framing`,
  );
}

/**
 * Makes every parser-level refusal of `server` an application/problem+json answer with a
 * stable code (Node and fastify would answer an empty or plain JSON 400, 408, 431 or 417),
 * logged at debug since any client can cause them.
 */
export function answerClientErrorsAsProblems(
  server: Server,
  limits: Pick<ConnectionLimits, 'headersTimeoutMs' | 'requestTimeoutMs'>,
  log: Logger,
): void {
  // replaces fastify's handler, which answers plain JSON that is not a problem
  server.removeAllListeners('clientError');
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const error = socket.destroyed ? undefined : clientErrorProblem(err, limits);
    log.debug({ code: err.code, remoteAddress: socket.remoteAddress, answer: error?.code }, 'client error');
    // an answer already begun cannot be replaced by a problem (Node's own rule)
    const response = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage;
    if (error && socket.writable && !response?.headersSent) {
      const correlationId = randomUUID();
      const text = JSON.stringify(problemBody(error, correlationId));
      socket.write(
        `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status]}\r\n` +
          'Content-Type: application/problem+json\r\n' +
          `Content-Length: ${Buffer.byteLength(text)}\r\n` +
          `X-Correlation-Id: ${correlationId}\r\n` +
          'Connection: close\r\n\r\n' +
          text,
      );
      // flushes what was written, then closes: a slow client keeps no descriptor
      socket.destroySoon();
    } else socket.destroy();
  });
  server.on('checkExpectation', (_req: IncomingMessage, res: ServerResponse) => {
    const correlationId = randomUUID();
    const error = new KeyferryError(
      'expectation_failed',
      'the only Expect this server knows is 100-continue: drop the Expect header',
    );
    const text = JSON.stringify(problemBody(error, correlationId));
    res.shouldKeepAlive = false;
    res.writeHead(error.status, {
      'Content-Type': 'application/problem+json',
      'Content-Length': Buffer.byteLength(text),
      'X-Correlation-Id': correlationId,
      Connection: 'close',
    });
    res.end(text);
  });
}

import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { KeyferryError } from '@keyferry/core';
import type { Logger } from 'pino';
import { CORRELATION_HEADER, sendJson, sendProblem } from '../devicelink/http-io.ts';
import { peerChain } from '../devicelink/identity.ts';
import { toKeyferryError } from '../http/problem.ts';
import { observeRequest } from '../metrics/observe-request.ts';
import type { ServiceMetrics } from '../metrics/service-metrics.ts';
import type { Db } from '../storage/database.ts';
import {
  assertDeviceCaTrusted,
  assertNotRevoked,
  assertStillValid,
  type VerifiedClient,
  verifyClientChain,
} from './client-auth.ts';
import { recordGatewayCall } from './device-registry.ts';
import type { GatewayTlsContexts } from './tls-contexts.ts';

export interface GatewayDeps {
  db: Db;
  contexts: GatewayTlsContexts;
  log: Logger;
  metrics?: ServiceMetrics | undefined;
}

/**
 * The device gateway's OTA-side API (docs/api.md): every request is authenticated by the client
 * certificate first, then `GET /device` answers the device's record. The chain is verified
 * once per TLS connection; validity, revocation and the registry are checked on every request.
 */
export function gatewayHandler(deps: GatewayDeps) {
  const verified = new WeakMap<TLSSocket, Promise<VerifiedClient>>();
  return (req: IncomingMessage, res: ServerResponse): void => {
    const correlationId = randomUUID();
    res.setHeader(CORRELATION_HEADER, correlationId);
    const path = (req.url ?? '/').split('?')[0]!;
    if (deps.metrics)
      observeRequest(deps.metrics, 'gateway', req, res, path === '/device' ? path : 'unmatched');
    void (async () => {
      const socket = req.socket as TLSSocket;
      const { factory } = await deps.contexts.forServername(socket.servername);
      let client = verified.get(socket);
      if (!client) {
        client = verifyClientChain(deps.db, factory, peerChain(socket));
        verified.set(socket, client);
      }
      const device = await client;
      await assertDeviceCaTrusted(deps.db, device);
      await assertNotRevoked(deps.db, device);
      assertStillValid(device);
      if (path !== '/device')
        throw new KeyferryError('not_found', `no device gateway endpoint ${path}; there is GET /device`);
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        throw new KeyferryError('not_found', `${path} takes GET, not ${req.method}`);
      }
      sendJson(res, 200, await recordGatewayCall(deps.db, factory.id, device.leaf, { correlationId }));
    })().catch((err: unknown) => {
      const error = toKeyferryError(err, deps.log);
      deps.metrics?.refused('gateway', error.code);
      if (error.expose)
        deps.log.info({ correlationId, code: error.code, msg: error.message, path }, 'gateway refused');
      else deps.log.error({ correlationId, err, path }, 'gateway request failed');
      if (res.headersSent) return void res.destroy();
      res.setHeader('connection', 'close');
      sendProblem(res, error, correlationId);
    });
  };
}

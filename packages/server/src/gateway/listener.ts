import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTcpServer, type Socket } from 'node:net';
import type { Logger } from 'pino';
import type { ServiceContext } from '../context.ts';
import { answerClientErrorsAsProblems } from '../http/client-errors.ts';
import {
  applyConnectionLimits,
  type ConnectionLimits,
  serverTimeoutOptions,
} from '../http/connection-limits.ts';
import { drainOnClose, listenOn } from '../http/listen.ts';
import { SERVER_TLS_POLICY } from '../http/tls-policy.ts';
import { gatewayHandler } from './router.ts';
import { factoriesWithTlsKeyOnHsm, GatewayTlsContexts, keyOnHsmAdvice } from './tls-contexts.ts';

export interface GatewayListener {
  /** `host:port` actually bound. */
  address: string;
  /** Open TCP connections (handshaking or not), as counted against maxConnections. */
  connections(): Promise<number>;
  close(): Promise<void>;
}

/**
 * The device gateway listener (docs/api.md): HTTPS on its own port. The SNI name picks the
 * factory's tls-crt; a TCP front accepts each connection paused, brings the default context
 * (clients that send no SNI) up to date with the factory PKI, then hands it to TLS. The client
 * certificate is requested but judged by the service (client-auth.ts), never by OpenSSL alone.
 * The TLS keys come from the TLS key store, whatever holds the CA keys.
 */
export async function startGateway(
  ctx: ServiceContext,
  options: { log?: Logger; limits?: Partial<ConnectionLimits>; listen?: string } = {},
): Promise<GatewayListener> {
  const log = options.log ?? ctx.log.child({ listener: 'gateway' });
  const onHsm = await factoriesWithTlsKeyOnHsm(ctx.database.db, ctx.tlsKeys);
  if (onHsm.length > 0) log.warn({ factories: onHsm }, keyOnHsmAdvice(onHsm));
  // gateway.limits (defaults GATEWAY_LIMITS); a test may narrow them for one extra listener
  const limits = { ...ctx.config.gateway.limits, ...options.limits };
  const contexts = new GatewayTlsContexts(ctx.database.db, ctx.tlsKeys, ctx.config.domain);
  const https = createHttpsServer(
    {
      requestCert: true,
      rejectUnauthorized: false,
      ...SERVER_TLS_POLICY,
      handshakeTimeout: limits.handshakeTimeoutMs,
      ...serverTimeoutOptions(limits),
      SNICallback: (servername, done) => {
        contexts.forServername(servername).then(
          (material) => done(null, material.context),
          (err: unknown) => {
            log.debug({ err, servername }, 'gateway SNI refused');
            done(err as Error);
          },
        );
      },
    },
    gatewayHandler({ db: ctx.database.db, contexts, log, metrics: ctx.metrics }),
  );
  answerClientErrorsAsProblems(https, limits, log);
  https.on('tlsClientError', (err) => log.debug({ err }, 'gateway TLS handshake failed'));

  let defaultVersion: string | undefined;
  const sockets = new Set<Socket>();
  const tcp = createTcpServer({ pauseOnConnect: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    // Also bounds the database look-up below: a connection never waits unbounded for TLS.
    const timer = setTimeout(() => socket.destroy(), limits.handshakeTimeoutMs);
    contexts
      .single()
      .then(
        (material) => {
          const version = `${material.factory.id}|${material.version}`;
          if (version !== defaultVersion) {
            https.setSecureContext({ ...SERVER_TLS_POLICY, ...material.options });
            defaultVersion = version;
          }
        },
        () => {
          if (defaultVersion !== undefined) {
            https.setSecureContext({ ...SERVER_TLS_POLICY });
            defaultVersion = undefined;
          }
        },
      )
      .catch((err: unknown) => log.error({ err }, 'gateway default TLS context failed'))
      .finally(() => {
        clearTimeout(timer);
        if (!socket.destroyed) https.emit('connection', socket);
      });
  });
  applyConnectionLimits(https, limits, log, tcp);
  const draining = drainOnClose(https, {
    accepting: tcp,
    cutAlso: () => {
      for (const socket of sockets) socket.destroy();
    },
  });
  const address = await listenOn(tcp, options.listen ?? ctx.config.gateway.listen);
  return {
    address,
    connections: () =>
      new Promise<number>((resolve, reject) =>
        tcp.getConnections((err, n) => (err ? reject(err) : resolve(n))),
      ),
    close: () => draining.close(),
  };
}

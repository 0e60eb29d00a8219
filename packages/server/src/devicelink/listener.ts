import { createServer, type Server } from 'node:https';
import type { Logger } from 'pino';
import type { ServiceContext } from '../context.ts';
import { listenOn } from '../http/listen.ts';
import { IssuingCas } from './issuing-cas.ts';
import { deviceLinkHandler } from './router.ts';
import { deviceLinkTls } from './tls-material.ts';
import { DEVICE_LINK_HANDSHAKE_TIMEOUT_MS, deviceLinkTlsOptions } from './tls-options.ts';
import { TrustAnchors } from './trust-anchors.ts';

/** Slow or idle clients are cut off after these (a device needs far less). */
export const DEVICE_LINK_LIMITS = {
  handshakeTimeoutMs: DEVICE_LINK_HANDSHAKE_TIMEOUT_MS,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  maxConnections: 2_048,
} as const;

export interface DeviceLinkListener {
  /** `host:port` actually bound. */
  address: string;
  /** The service CA file devices trust, when keyferryd made its own TLS material. */
  caFile: string | undefined;
  close(): Promise<void>;
}

/**
 * The device-link listener (docs/device-link.md): HTTPS with a client certificate requested
 * (tls-options.ts). TLS does not reject a missing or unknown certificate itself: the service
 * verifies the vendor identity per product so it can answer with a precise problem code.
 */
export async function startDeviceLink(
  ctx: ServiceContext,
  options: { embeddedDefaults: boolean; log?: Logger },
): Promise<DeviceLinkListener> {
  const log = options.log ?? ctx.log.child({ listener: 'device-link' });
  const tls = await deviceLinkTls(ctx.config);
  const anchors = new TrustAnchors(ctx.config, options.embeddedDefaults, log);
  const server: Server = createServer(
    deviceLinkTlsOptions(tls),
    deviceLinkHandler({
      db: ctx.database.db,
      domain: ctx.config.domain,
      anchors,
      issuingCas: new IssuingCas(ctx.database.db, ctx.custody),
      custody: ctx.custody,
      log,
      metrics: ctx.metrics,
    }),
  );
  server.headersTimeout = DEVICE_LINK_LIMITS.headersTimeoutMs;
  server.requestTimeout = DEVICE_LINK_LIMITS.requestTimeoutMs;
  server.keepAliveTimeout = DEVICE_LINK_LIMITS.keepAliveTimeoutMs;
  server.maxConnections = DEVICE_LINK_LIMITS.maxConnections;
  server.setTimeout(DEVICE_LINK_LIMITS.idleTimeoutMs);
  // A device's certificate is verified once per connection (identity.ts): it must not change on it.
  server.on('secureConnection', (socket) => socket.disableRenegotiation());
  server.on('tlsClientError', (err) => log.debug({ err }, 'device-link TLS handshake failed'));
  const address = await listenOn(server, ctx.config.deviceLink.listen);
  return {
    address,
    caFile: tls.caFile,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

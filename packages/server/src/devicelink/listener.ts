import { createServer, type Server } from 'node:https';
import type { Logger } from 'pino';
import type { ServiceContext } from '../context.ts';
import { answerClientErrorsAsProblems } from '../http/client-errors.ts';
import { applyConnectionLimits, serverTimeoutOptions } from '../http/connection-limits.ts';
import { drainOnClose, listenOn } from '../http/listen.ts';
import { TokenBuckets } from '../http/rate-limit.ts';
import { IssuingCas } from './issuing-cas.ts';
import { deviceLinkHandler } from './router.ts';
import { deviceLinkTls } from './tls-material.ts';
import { deviceLinkTlsOptions } from './tls-options.ts';
import { TrustAnchors } from './trust-anchors.ts';

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
  const tls = await deviceLinkTls(ctx.config, { db: ctx.database.db, tlsKeys: ctx.tlsKeys });
  const anchors = new TrustAnchors(ctx.config, options.embeddedDefaults, log);
  // deviceLink.limits, defaults DEVICE_LINK_LIMITS: slow or idle clients are cut off after these
  const { limits, rateLimits } = ctx.config.deviceLink;
  const server: Server = createServer(
    { ...deviceLinkTlsOptions(tls, limits.handshakeTimeoutMs), ...serverTimeoutOptions(limits) },
    deviceLinkHandler({
      db: ctx.database.db,
      domain: ctx.config.domain,
      anchors,
      issuingCas: new IssuingCas(ctx.database.db, ctx.custody),
      custody: ctx.custody,
      crlRefresher: ctx.crlRefresher,
      log,
      metrics: ctx.metrics,
      rateLimits: {
        perIdentity: new TokenBuckets(rateLimits.perIdentity),
        perAddress: new TokenBuckets(rateLimits.perAddress),
      },
    }),
  );
  applyConnectionLimits(server, limits, log);
  answerClientErrorsAsProblems(server, limits, log);
  // A device's certificate is verified once per connection (identity.ts): it must not change on it.
  server.on('secureConnection', (socket) => socket.disableRenegotiation());
  server.on('tlsClientError', (err) => log.debug({ err }, 'device-link TLS handshake failed'));
  const draining = drainOnClose(server);
  const address = await listenOn(server, ctx.config.deviceLink.listen);
  return { address, caFile: tls.caFile, close: () => draining.close() };
}

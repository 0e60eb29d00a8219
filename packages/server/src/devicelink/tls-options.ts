import { constants } from 'node:crypto';
import type { ServerOptions } from 'node:https';
import { DEVICE_LINK_LIMITS } from '../http/connection-limits.ts';
import { SERVER_TLS_POLICY } from '../http/tls-policy.ts';
import type { DeviceLinkTls } from './tls-material.ts';

/**
 * The device-link's TLS server options (docs/device-link.md), shared with the bench's floor server so
 * the floor costs what the listener's TLS costs. Versions and suites: SERVER_TLS_POLICY. A client certificate is requested but not
 * judged by TLS: the service verifies the vendor identity per product and answers with a
 * precise problem code. SSL_OP_NO_TICKET: a device makes one connection per run, so the
 * encrypted session tickets OpenSSL would mint after each handshake (~0.3 ms of server CPU
 * each) are never used; with the option OpenSSL keeps a small server-side session cache instead.
 */
export function deviceLinkTlsOptions(
  tls: Pick<DeviceLinkTls, 'cert' | 'key'>,
  handshakeTimeoutMs = DEVICE_LINK_LIMITS.handshakeTimeoutMs,
): ServerOptions {
  return {
    ...SERVER_TLS_POLICY,
    cert: tls.cert,
    key: tls.key,
    requestCert: true,
    rejectUnauthorized: false,
    secureOptions: constants.SSL_OP_NO_TICKET,
    handshakeTimeout: handshakeTimeoutMs,
  };
}

import type { Server as HttpServer, ServerOptions as HttpServerOptions } from 'node:http';
import type { Server as NetServer, Socket } from 'node:net';
import type { Logger } from 'pino';
import { z } from 'zod';

/**
 * Bounds of one listener against slow, idle and numerous clients (docs/reliability.md). Each
 * listener has its own caps, so a flood of one (say the management API) cannot take the file
 * descriptors the device-link needs.
 */
export interface ConnectionLimits {
  /** TLS listeners: a TCP connection must finish its handshake within this, ClientHello included. */
  handshakeTimeoutMs: number;
  /** The request line and headers must arrive within this after the connection is ready. */
  headersTimeoutMs: number;
  /** The whole request, body included, must arrive within this. */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: number;
  /** A connection with no traffic at all is closed after this. */
  idleTimeoutMs: number;
  /** Connections past this are closed as they arrive. */
  maxConnections: number;
  /** Connections from one client address past this are closed as they arrive. */
  maxConnectionsPerAddress: number;
}

/** The management API: operators and their scripts, a few at a time. */
export const API_LIMITS: Readonly<ConnectionLimits> = {
  handshakeTimeoutMs: 5_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 60_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  maxConnections: 256,
  maxConnectionsPerAddress: 64,
};

/** The device-link: one short connection per device run; a factory line is behind few addresses (NAT). */
export const DEVICE_LINK_LIMITS: Readonly<ConnectionLimits> = {
  handshakeTimeoutMs: 5_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  maxConnections: 2_048,
  maxConnectionsPerAddress: 512,
};

/** The device gateway: devices in the field, each with its own address mostly. */
export const GATEWAY_LIMITS: Readonly<ConnectionLimits> = {
  handshakeTimeoutMs: 5_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 30_000,
  maxConnections: 2_048,
  maxConnectionsPerAddress: 128,
};

/**
 * Node checks headersTimeout and requestTimeout only every `connectionsCheckingInterval`
 * (30 s by default), so a 10 s limit acted at ~29 s: check at a tenth of the shorter limit,
 * between these bounds, so a limit holds within 10 % (and at most one second).
 */
const CHECKING_INTERVAL_MS = { min: 50, max: 1_000 } as const;

/** The config schema of one listener's limits, with that listener's defaults. */
export function connectionLimitsSchema(defaults: Readonly<ConnectionLimits>) {
  const ms = (value: number) => z.number().int().min(100).max(3_600_000).default(value);
  const count = (value: number) => z.number().int().min(1).max(1_000_000).default(value);
  return z
    .strictObject({
      handshakeTimeoutMs: ms(defaults.handshakeTimeoutMs),
      headersTimeoutMs: ms(defaults.headersTimeoutMs),
      requestTimeoutMs: ms(defaults.requestTimeoutMs),
      keepAliveTimeoutMs: ms(defaults.keepAliveTimeoutMs),
      idleTimeoutMs: ms(defaults.idleTimeoutMs),
      maxConnections: count(defaults.maxConnections),
      maxConnectionsPerAddress: count(defaults.maxConnectionsPerAddress),
    })
    .refine((l) => l.headersTimeoutMs <= l.requestTimeoutMs, {
      message: 'headersTimeoutMs must not exceed requestTimeoutMs (the headers are part of the request)',
    })
    .prefault({});
}

/** The options only `createServer` takes: the timeouts and how often Node checks them. */
export function serverTimeoutOptions(limits: ConnectionLimits): HttpServerOptions {
  const interval = Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs) / 10;
  return {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.round(
      Math.min(CHECKING_INTERVAL_MS.max, Math.max(CHECKING_INTERVAL_MS.min, interval)),
    ),
  };
}

/**
 * Applies the limits to an HTTP(S) server made with `serverTimeoutOptions`. `front` is the TCP
 * server that accepts the connections when it is not the HTTP server itself (the gateway).
 */
export function applyConnectionLimits(
  server: HttpServer,
  limits: ConnectionLimits,
  log: Logger,
  front: NetServer = server,
): void {
  // set again: fastify overwrites what createServer was given with its own options
  server.headersTimeout = limits.headersTimeoutMs;
  server.requestTimeout = limits.requestTimeoutMs;
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  server.setTimeout(limits.idleTimeoutMs);
  front.maxConnections = limits.maxConnections;
  capPerAddress(front, limits.maxConnectionsPerAddress, log);
  if (front !== server) {
    // Node checks an HTTP server's headers and request timeouts, and keeps the list of its
    // connections that closeIdleConnections and closeAllConnections walk, only from its own
    // 'listening' on. One that never listens (its front does) had neither: a client dripping
    // its request head held a gateway connection forever, and a stopping gateway left its idle
    // keep-alive connections open until the grace period cut them.
    front.on('listening', () => server.emit('listening'));
    // and the checking timer stops when the front has closed
    front.on('close', () => server.close());
  }
}

/**
 * Closes a connection as it arrives when its address already has `max` open: one client
 * (or one NAT) cannot hold every slot of a listener. Logged once per address and burst, at
 * warn, so an operator sees who floods without the flood filling the log.
 */
export function capPerAddress(server: NetServer, max: number, log: Logger): void {
  const open = new Map<string, number>();
  const warned = new Set<string>();
  // Node's own handlers (HTTP parser, TLS wrap) run only for admitted sockets: they must never
  // see one that is already destroyed.
  const handlers = server.listeners('connection') as Array<(socket: Socket) => void>;
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? '';
    const count = (open.get(address) ?? 0) + 1;
    if (count > max) {
      if (!warned.has(address)) {
        warned.add(address);
        log.warn(
          { remoteAddress: address, maxConnectionsPerAddress: max },
          `too many connections from ${address}: closing those past ${max} until some end`,
        );
      }
      socket.destroy();
      return;
    }
    open.set(address, count);
    socket.once('close', () => {
      const left = (open.get(address) ?? 1) - 1;
      if (left > 0) open.set(address, left);
      else {
        open.delete(address);
        warned.delete(address);
      }
    });
    for (const handler of handlers) handler.call(server, socket);
  });
}

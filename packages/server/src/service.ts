import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isLoopbackHost, writeFileAtomic } from '@keyferry/core';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import type { JobRunnerOptions } from './allowlist/bulk-jobs.ts';
import { startAuditRetention } from './audit/retention.ts';
import { parseListen } from './config/load.ts';
import type { Config } from './config/schema.ts';
import type { ServiceContext } from './context.ts';
import { startDeviceLink } from './devicelink/listener.ts';
import { deviceLinkTls } from './devicelink/tls-material.ts';
import { createFactory } from './factories/create-factory.ts';
import { countFactories } from './factories/factories.ts';
import { startGateway } from './gateway/listener.ts';
import { managementApiTls } from './http/api-tls.ts';
import { buildManagementApi } from './http/app.ts';
import { bindListener } from './http/listen.ts';
import { reportOpenFileLimit } from './http/open-file-limit.ts';
import { openCustody } from './keys/open-custody.ts';
import { ServiceMetrics } from './metrics/service-metrics.ts';
import { setCrlHeldBytes, setCrlTiming } from './revocation/crl-store.ts';
import { CrlRefresher } from './revocation/refresh.ts';
import { startCrlResign } from './revocation/resign.ts';
import { openDatabase } from './storage/database.ts';
import { createApiToken } from './tokens/api-tokens.ts';

export interface RunningService {
  ctx: ServiceContext;
  api: FastifyInstance;
  /** Addresses actually bound (port 0 resolved), as also written to `<dataDir>/listen.json`. */
  addresses: { api: string; deviceLink?: string; gateway?: string };
  /** Set on the first start only: the demo factory and its admin token. */
  demo: { factory: string; token: string } | undefined;
  close(): Promise<void>;
}

/** In the data dir: the addresses bound, present only while keyferryd serves them. */
export const LISTEN_FILE = 'listen.json';

export interface StartOptions {
  config: Config;
  /** True when keyferryd runs without a config file (development defaults apply). */
  embeddedDefaults: boolean;
  log?: Logger;
  /** Bulk job lease and chunk sizes; tests shorten them, keyferryd uses the defaults. */
  jobs?: JobRunnerOptions;
  /**
   * `alone` (default): one process does everything. With `workers` > 1 (cluster.ts) the
   * `primary` prepares the data dir, database, custody and demo factory and runs the timers
   * (audit retention) but binds nothing, and each `worker` binds the listeners without writing
   * listen.json (the primary writes it once every worker listens) and without timers.
   */
  role?: 'alone' | 'primary' | 'worker';
}

export async function startService(options: StartOptions): Promise<RunningService> {
  const { config } = options;
  const role = options.role ?? 'alone';
  const log = options.log ?? pino({ level: config.log.level, base: { service: 'keyferryd' } });
  // checked before anything is written: a refused start leaves no trace
  const { host, port } = parseListen(config.api.listen);
  const https = managementApiTls(config.api, host);
  const dataDir = resolve(config.dataDir);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  if (role !== 'worker') {
    warnIfShared(log, dataDir);
    reportOpenFileLimit(config, log);
  }
  // listen.json says "ready at these addresses": it must exist only while this process
  // serves them, or whoever waits for it goes on against a dead or foreign listener.
  const listenFile = join(dataDir, LISTEN_FILE);
  if (role !== 'worker') rmSync(listenFile, { force: true });
  const database = await openDatabase(config.storage, dataDir, {
    backgroundCheckpoints: true,
    threadReads: true,
    log,
  });
  const closers: Array<() => Promise<void>> = [() => database.close()];
  try {
    // SQLite: one checkpointer per database, in the process that runs the timers
    if (role !== 'worker' && database.checkpointInBackground)
      closers.unshift(await database.checkpointInBackground(log));
    const keys = await openCustody({ ...config, dataDir }, database, { createMasterKey: true, log });
    closers.unshift(() => keys.close());
    const { custody, tlsKeys } = keys;
    // after the listeners close, the CRL re-signs they scheduled end before custody and database
    const crlRefresher = new CrlRefresher({ db: database.db, custody, log });
    closers.unshift(() => crlRefresher.settled());
    // the demo factory defaults to on with the embedded defaults only
    const demoFactory = {
      ...config.demoFactory,
      enabled: config.demoFactory.enabled ?? options.embeddedDefaults,
    };
    const ctx: ServiceContext = {
      config: { ...config, dataDir, demoFactory },
      database,
      custody,
      tlsKeys,
      log,
      crlRefresher,
      metrics: new ServiceMetrics(database),
      lifecycle: { serving: false },
    };
    // crl.*: every process signs CRLs (on revocation) with the same timing
    setCrlTiming({ validityMs: config.crl.validity, renewBeforeMs: config.crl.renewBefore });
    setCrlHeldBytes(config.crl.heldBytes);
    let demo: RunningService['demo'];
    if (role !== 'worker') {
      // audit.retentionDays: pruned once now, then hourly
      const stopRetention = await startAuditRetention(database.db, config.audit.retentionDays, log);
      closers.unshift(async () => stopRetention());
      // CRLs are re-signed before their nextUpdate even when nothing is revoked (claimed
      // through the database, so one node of several does it)
      const stopCrlResign = await startCrlResign(
        { db: database.db, dialect: database.dialect, custody, log },
        config.crl.checkInterval,
      );
      closers.unshift(async () => stopCrlResign());
      demo = await ensureDemoFactory(ctx);
    }
    if (role === 'primary') {
      // the device-link's service CA and certificate are files made on first start: made here
      // once, or each worker would make its own and overwrite the others'
      if (config.deviceLink.enabled)
        await deviceLinkTls(ctx.config, { db: ctx.database.db, tlsKeys: ctx.tlsKeys });
      return preparedPrimary(ctx, demo, closers);
    }
    const api = await buildManagementApi(ctx, https, options.jobs);
    // the listeners stop together, each letting its requests in flight finish (SHUTDOWN_GRACE_MS)
    const listeners: Array<() => Promise<void>> = [() => api.close()];
    closers.unshift(async () => {
      await Promise.all(listeners.map((close) => close()));
    });
    await bindListener('api.listen', config.api.listen, () => api.listen({ host, port }));
    const bound = api.server.address();
    const scheme = https ? 'https' : 'http';
    const apiUrl = `${scheme}://${formatHost(host)}:${typeof bound === 'object' && bound ? bound.port : port}`;
    if (!https) {
      log.warn(
        { listen: config.api.listen },
        isLoopbackHost(host)
          ? 'management API is plain HTTP on loopback: set api.tls to serve it to other machines'
          : 'management API is plain HTTP on a reachable address (api.insecure): only behind a TLS proxy',
      );
    }
    const addresses: RunningService['addresses'] = { api: apiUrl };
    if (config.deviceLink.enabled) {
      const deviceLink = await bindListener('deviceLink.listen', config.deviceLink.listen, () =>
        startDeviceLink(ctx, { embeddedDefaults: options.embeddedDefaults }),
      );
      listeners.push(() => deviceLink.close());
      addresses.deviceLink = deviceLink.address;
    }
    if (config.gateway.enabled) {
      const gateway = await bindListener('gateway.listen', config.gateway.listen, () => startGateway(ctx));
      listeners.push(() => gateway.close());
      addresses.gateway = gateway.address;
    }
    if (role === 'alone') {
      writeFileAtomic(listenFile, JSON.stringify(addresses) + '\n', 0o600);
      closers.unshift(async () => rmSync(listenFile, { force: true }));
    }
    // readiness goes first on shutdown, so a balancer stops sending before listeners close
    ctx.lifecycle!.serving = true;
    closers.unshift(async () => {
      ctx.lifecycle!.serving = false;
    });
    log.info({ addresses, storage: database.dialect, custody: custody.backend }, 'keyferryd ready');
    let closed = false;
    return {
      ctx,
      api,
      addresses,
      demo,
      async close() {
        if (closed) return;
        closed = true;
        for (const close of closers) await close();
      },
    };
  } catch (err) {
    for (const close of closers) await close().catch(() => {});
    if (role !== 'worker') rmSync(listenFile, { force: true });
    throw err;
  }
}

/** What the primary of several workers holds: database, custody and timers, no listener. */
export type PreparedPrimary = Pick<RunningService, 'ctx' | 'demo' | 'close'>;

export function startPrimary(options: Omit<StartOptions, 'role'>): Promise<PreparedPrimary> {
  return startService({ ...options, role: 'primary' });
}

function preparedPrimary(
  ctx: ServiceContext,
  demo: RunningService['demo'],
  closers: Array<() => Promise<void>>,
): RunningService {
  let closed = false;
  // only startPrimary sees this, as a PreparedPrimary: the primary binds no listener
  return {
    ctx,
    api: undefined as unknown as FastifyInstance,
    addresses: { api: '' },
    demo,
    async close() {
      if (closed) return;
      closed = true;
      for (const close of closers) await close();
    },
  };
}

/** On the first start of an empty database, make the demo factory and its admin token. */
async function ensureDemoFactory(ctx: ServiceContext): Promise<RunningService['demo']> {
  const { demoFactory } = ctx.config;
  if (!demoFactory.enabled || (await countFactories(ctx.database.db)) > 0) return undefined;
  const factory = await createFactory(ctx, demoFactory.name, {
    actor: 'system',
    correlationId: randomUUID(),
  });
  const { token } = await createApiToken(ctx.database.db, {
    factoryId: factory.id,
    scopes: ['read', 'write'],
    description: 'demo factory admin (created on first start)',
  });
  writeFileAtomic(join(ctx.config.dataDir, `${factory.name}.token`), token + '\n', 0o600);
  return { factory: factory.name, token };
}

/**
 * A data dir that existed before (mkdir keeps its mode) may let other users list it and read
 * files that another tool left there; keyferryd's own files are 0600 either way.
 */
function warnIfShared(log: Logger, dataDir: string): void {
  const mode = statSync(dataDir).mode & 0o777;
  if ((mode & 0o077) === 0) return;
  log.warn(
    { dataDir, mode: mode.toString(8).padStart(4, '0') },
    `data dir ${dataDir} is open to group or others (mode ${mode.toString(8).padStart(4, '0')}): it holds the database, keys and tokens; run chmod 700 ${dataDir}`,
  );
}

function formatHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

import { randomUUID } from 'node:crypto';
import { chmodSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { parseListen } from './config/load.ts';
import type { Config } from './config/schema.ts';
import type { ServiceContext } from './context.ts';
import { startDeviceLink } from './devicelink/listener.ts';
import { createFactory } from './factories/create-factory.ts';
import { countFactories } from './factories/factories.ts';
import { startGateway } from './gateway/listener.ts';
import { buildManagementApi } from './http/app.ts';
import { openCustody } from './keys/open-custody.ts';
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

export interface StartOptions {
  config: Config;
  /** True when keyferryd runs without a config file (development defaults apply). */
  embeddedDefaults: boolean;
  log?: Logger;
}

export async function startService(options: StartOptions): Promise<RunningService> {
  const { config } = options;
  const log = options.log ?? pino({ level: config.log.level, base: { service: 'keyferryd' } });
  const dataDir = resolve(config.dataDir);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  warnIfShared(log, dataDir);
  rmSync(join(dataDir, 'listen.json'), { force: true });
  const database = await openDatabase(config.storage, dataDir);
  const closers: Array<() => Promise<void>> = [() => database.close()];
  try {
    const custody = await openCustody({ ...config, dataDir }, database);
    closers.unshift(() => custody.close());
    const ctx: ServiceContext = { config: { ...config, dataDir }, database, custody, log };
    const demo = await ensureDemoFactory(ctx);
    const api = await buildManagementApi(ctx);
    closers.unshift(() => api.close());
    const { host, port } = parseListen(config.api.listen);
    await api.listen({ host, port });
    const bound = api.server.address();
    const apiUrl = `http://${formatHost(host)}:${typeof bound === 'object' && bound ? bound.port : port}`;
    const addresses: RunningService['addresses'] = { api: apiUrl };
    if (config.deviceLink.enabled) {
      const deviceLink = await startDeviceLink(ctx, { embeddedDefaults: options.embeddedDefaults });
      closers.unshift(() => deviceLink.close());
      addresses.deviceLink = deviceLink.address;
    }
    if (config.gateway.enabled) {
      const gateway = await startGateway(ctx);
      if (gateway) {
        closers.unshift(() => gateway.close());
        addresses.gateway = gateway.address;
      }
    }
    writeAtomically(join(dataDir, 'listen.json'), JSON.stringify(addresses) + '\n', 0o600);
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
    throw err;
  }
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
  writeAtomically(join(ctx.config.dataDir, `${factory.name}.token`), token + '\n', 0o600);
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

function writeAtomically(path: string, text: string, mode: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

function formatHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

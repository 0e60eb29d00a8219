import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { DURATION_FORMAT, KeyferryError, parseDuration } from '@keyferry/core';
import pino from 'pino';
import type { Config } from './config/schema.ts';
import type { ServiceContext } from './context.ts';
import { createFactory } from './factories/create-factory.ts';
import { type Factory, findFactoryByName } from './factories/factories.ts';
import { openCustody } from './keys/open-custody.ts';
import { CrlRefresher } from './revocation/refresh.ts';
import { openDatabase } from './storage/database.ts';
import { issueFactoryToken, listApiTokens, revokeFactoryToken, type TokenInfo } from './tokens/api-tokens.ts';

/**
 * `keyferryd admin …`: the first factory and token of a deployment, straight on the database
 * and key custody the config names (no running keyferryd needed, none disturbed).
 */
export async function withAdminContext<T>(
  config: Config,
  work: (ctx: ServiceContext) => Promise<T>,
): Promise<T> {
  const dataDir = resolve(config.dataDir);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const database = await openDatabase(config.storage, dataDir);
  try {
    const { custody, tlsKeys, close } = await openCustody({ ...config, dataDir }, database);
    try {
      const log = pino({ level: 'silent' });
      const crlRefresher = new CrlRefresher({ db: database.db, custody, log });
      try {
        return await work({ config: { ...config, dataDir }, database, custody, tlsKeys, log, crlRefresher });
      } finally {
        await crlRefresher.settled();
      }
    } finally {
      await close();
    }
  } finally {
    await database.close();
  }
}

const ADMIN_CHANGE = () => ({ actor: 'admin:keyferryd', correlationId: randomUUID() });

/**
 * A consistent copy of the SQLite database while keyferryd may be running. The master key is
 * not in it: back that up apart (docs/deployment.md).
 */
export async function adminBackup(ctx: ServiceContext, file: string): Promise<void> {
  if (!ctx.database.backupTo) {
    throw new KeyferryError(
      'invalid_request',
      'keyferryd admin backup copies SQLite databases; back up PostgreSQL with pg_dump --format=custom',
    );
  }
  if (existsSync(file)) {
    throw new KeyferryError('conflict', `${file} exists already: name a new file, a backup never overwrites`);
  }
  await ctx.database.backupTo(file);
}

export async function adminCreateFactory(ctx: ServiceContext, name: string): Promise<Factory> {
  return createFactory(ctx, name, ADMIN_CHANGE());
}

async function factoryNamed(ctx: ServiceContext, name: string): Promise<Factory> {
  const factory = await findFactoryByName(ctx.database.db, name);
  if (!factory) {
    throw new KeyferryError(
      'not_found',
      `factory ${name} not found: create it with keyferryd admin factory create ${name}`,
    );
  }
  return factory;
}

/** `--expires 30d` as a time from now; undefined: never. */
export function expiryFromDuration(text: string | undefined, now = new Date()): Date | undefined {
  if (text === undefined) return undefined;
  const seconds = parseDuration(text);
  if (seconds === undefined) {
    throw new KeyferryError(
      'invalid_request',
      `--expires ${JSON.stringify(text)} is not a duration: use ${DURATION_FORMAT}`,
    );
  }
  return new Date(now.getTime() + seconds * 1000);
}

export async function adminCreateToken(
  ctx: ServiceContext,
  input: { factory: string; scopes: string[]; expires?: string | undefined; description: string },
): Promise<{ token: string; info: TokenInfo; factory: Factory }> {
  const expiresAt = expiryFromDuration(input.expires);
  const factory = await factoryNamed(ctx, input.factory);
  const created = await issueFactoryToken(
    ctx.database,
    { factoryId: factory.id, scopes: input.scopes, description: input.description, expiresAt },
    ADMIN_CHANGE(),
  );
  return { ...created, factory };
}

export async function adminListTokens(ctx: ServiceContext, factory: string): Promise<TokenInfo[]> {
  return listApiTokens(ctx.database.db, (await factoryNamed(ctx, factory)).id);
}

export async function adminRevokeToken(ctx: ServiceContext, factory: string, id: string): Promise<TokenInfo> {
  return revokeFactoryToken(ctx.database, (await factoryNamed(ctx, factory)).id, id, ADMIN_CHANGE());
}

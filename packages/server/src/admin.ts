import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DURATION_FORMAT, KeyferryError, parseDuration } from '@keyferry/core';
import pino from 'pino';
import type { Config } from './config/schema.ts';
import type { ServiceContext } from './context.ts';
import { createFactory } from './factories/create-factory.ts';
import { type Factory, findFactoryByName } from './factories/factories.ts';
import { openCustody } from './keys/open-custody.ts';
import { CrlRefresher } from './revocation/refresh.ts';
import { type Database, openDatabase } from './storage/database.ts';
import { issueFactoryToken, listApiTokens, revokeFactoryToken, type TokenInfo } from './tokens/api-tokens.ts';

/**
 * The database of a `keyferryd admin` command: the one keyferryd made on its first start, never
 * a new one. A mistyped data dir would otherwise get an empty database (and a master key) of its
 * own, and the command would answer as if it had worked on the deployment's.
 */
export async function withAdminDatabase<T>(
  config: Config,
  work: (database: Database, dataDir: string) => Promise<T>,
): Promise<T> {
  const dataDir = resolve(config.dataDir);
  const firstStart = 'keyferryd makes it on its first start, admin commands never do';
  if (!existsSync(dataDir)) {
    throw new KeyferryError(
      'config_invalid',
      `data dir ${dataDir} does not exist (${firstStart}): name the data dir keyferryd runs on with dataDir in the config file (-c) or KEYFERRY_DATA_DIR`,
    );
  }
  if (config.storage.kind === 'sqlite') {
    const file = config.storage.path ?? join(dataDir, 'keyferry.db');
    if (!existsSync(file)) {
      const setting = config.storage.path
        ? 'storage.path in the config file (-c)'
        : 'dataDir in the config file (-c) or KEYFERRY_DATA_DIR';
      throw new KeyferryError(
        'config_invalid',
        `there is no database ${file} (${firstStart}): start keyferryd once, or name the database keyferryd runs on with ${setting}`,
      );
    }
  }
  const database = await openDatabase(config.storage, dataDir, { existing: true });
  try {
    return await work(database, dataDir);
  } finally {
    await database.close();
  }
}

/**
 * `keyferryd admin …`: the first factory and token of a deployment, straight on the database
 * and key custody the config names (no running keyferryd needed, none disturbed). It never makes
 * a master key: one made here would wrap keys with a key that the service (given its own with
 * KEYFERRY_MASTER_KEY_FILE) does not have.
 */
export async function withAdminContext<T>(
  config: Config,
  work: (ctx: ServiceContext) => Promise<T>,
): Promise<T> {
  return withAdminDatabase(config, async (database, dataDir) => {
    const { custody, tlsKeys, close } = await openCustody({ ...config, dataDir }, database, {
      createMasterKey: false,
    });
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
  });
}

const ADMIN_CHANGE = () => ({ actor: 'admin:keyferryd', correlationId: randomUUID() });

/**
 * A consistent copy of the SQLite database while keyferryd may be running. The master key is
 * not in it: back that up apart (docs/deployment.md). It needs no key custody
 * ({@link withAdminDatabase}): the keys are copied wrapped, as they are stored.
 */
export async function adminBackup(database: Database, file: string): Promise<void> {
  if (!database.backupTo) {
    throw new KeyferryError(
      'invalid_request',
      'keyferryd admin backup copies SQLite databases; back up PostgreSQL with pg_dump --format=custom',
    );
  }
  if (existsSync(file)) {
    throw new KeyferryError('conflict', `${file} exists already: name a new file, a backup never overwrites`);
  }
  await database.backupTo(file);
}

export async function adminCreateFactory(ctx: ServiceContext, name: string): Promise<Factory> {
  return createFactory(ctx, name, ADMIN_CHANGE());
}

async function factoryNamed(database: Database, name: string): Promise<Factory> {
  const factory = await findFactoryByName(database.db, name);
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

/*
 * The token commands work on the database alone (withAdminDatabase): a token's secret is kept
 * as its SHA-256, no key custody holds anything of it, so they need no master key or HSM.
 */

/**
 * A new token, its secret handed to `deliver` (stdout): when that fails (a full disk, a closed
 * pipe) nobody has the secret, so the token is revoked at once instead of staying live unseen.
 */
export async function adminCreateToken(
  database: Database,
  input: { factory: string; scopes: string[]; expires?: string | undefined; description: string },
  deliver: (secret: string) => Promise<void>,
): Promise<{ info: TokenInfo; factory: Factory }> {
  const expiresAt = expiryFromDuration(input.expires);
  const factory = await factoryNamed(database, input.factory);
  const { token, info } = await issueFactoryToken(
    database,
    { factoryId: factory.id, scopes: input.scopes, description: input.description, expiresAt },
    ADMIN_CHANGE(),
  );
  try {
    await deliver(token);
  } catch (err) {
    await revokeFactoryToken(database, factory.id, info.id, ADMIN_CHANGE());
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new KeyferryError(
      'internal',
      `the secret of token ${info.id} could not be written to stdout (${why}), so the token is revoked: run the command again with stdout to a file or pipe that takes it`,
      { cause: err },
    );
  }
  return { info, factory };
}

export async function adminListTokens(database: Database, factory: string): Promise<TokenInfo[]> {
  return listApiTokens(database.db, (await factoryNamed(database, factory)).id);
}

export async function adminRevokeToken(database: Database, factory: string, id: string): Promise<TokenInfo> {
  return revokeFactoryToken(database, (await factoryNamed(database, factory)).id, id, ADMIN_CHANGE());
}

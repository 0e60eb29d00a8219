import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { KeyferryError, MAX_DURATION_SECONDS } from '@keyferry/core';
import { recordAudit } from '../audit/audit-log.ts';
import { type Database, type Db, transactionForFactory } from '../storage/database.ts';

export type Scope = 'read' | 'write';
export const SCOPES: readonly Scope[] = ['read', 'write'];

/** Longest a token description may be (it is shown in listings and the audit log). */
export const MAX_TOKEN_DESCRIPTION = 200;

/** Who is calling: one token, scoped to one factory. */
export interface Principal {
  tokenId: string;
  factoryId: number;
  scopes: ReadonlySet<Scope>;
}

/** A token as listings show it: never its secret, which only its creator saw once. */
export interface TokenInfo {
  id: string;
  description: string;
  scopes: Scope[];
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
}

/** `kf_<16 hex id>_<43 base64url secret>`: the id finds the row, the secret is checked by hash. */
const TOKEN_FORMAT = /^kf_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/**
 * The scopes a `--scope` flag of the CLIs grants: `read`, or `write`, which can read too (a
 * token that may change the allow-list but not list it helps nobody).
 */
export function scopesOfFlag(flag: string): string[] {
  return flag === 'write' ? ['read', 'write'] : [flag];
}

/** Parses and orders scopes, refusing unknown ones with the list of known ones. */
export function parseScopes(scopes: readonly string[]): Scope[] {
  const unknown = scopes.filter((s) => !(SCOPES as readonly string[]).includes(s));
  if (unknown.length > 0 || scopes.length === 0) {
    throw new KeyferryError(
      'invalid_request',
      `${unknown.length > 0 ? `unknown scope ${unknown.map((s) => `"${s}"`).join(', ')}` : 'no scope given'}: scopes are ${SCOPES.join(' and ')} (a token that changes things usually has both)`,
    );
  }
  return [...new Set(scopes as Scope[])].sort();
}

/** Refuses an expiry in the past or further away than the longest duration keyferry accepts. */
export function checkExpiry(expiresAt: Date | undefined, now: Date): void {
  if (expiresAt === undefined) return;
  if (Number.isNaN(expiresAt.getTime())) {
    throw new KeyferryError(
      'invalid_request',
      'expires-at is not a time: use ISO 8601, e.g. 2027-01-31T00:00:00Z',
    );
  }
  if (expiresAt.getTime() <= now.getTime()) {
    throw new KeyferryError('invalid_request', `expires-at ${expiresAt.toISOString()} is not in the future`);
  }
  if (expiresAt.getTime() - now.getTime() > MAX_DURATION_SECONDS * 1000) {
    throw new KeyferryError(
      'invalid_request',
      'expires-at is more than 100 years away: choose a nearer time',
    );
  }
}

/** Creates a token and returns its only plaintext copy; the database keeps the hash. */
export async function createApiToken(
  db: Db,
  input: {
    factoryId: number;
    scopes: readonly Scope[];
    description: string;
    expiresAt?: Date | undefined;
    now?: Date;
  },
): Promise<{ id: string; token: string; info: TokenInfo }> {
  const now = input.now ?? new Date();
  checkExpiry(input.expiresAt, now);
  if (input.description.length > MAX_TOKEN_DESCRIPTION) {
    throw new KeyferryError(
      'invalid_request',
      `description is ${input.description.length} characters: at most ${MAX_TOKEN_DESCRIPTION}`,
    );
  }
  const id = randomBytes(8).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  const scopes = parseScopes(input.scopes);
  const row = {
    id,
    factory_id: input.factoryId,
    description: input.description,
    scopes: scopes.join(' '),
    secret_hash: hashSecret(secret),
    created_at: now.toISOString(),
    revoked_at: null,
    expires_at: input.expiresAt?.toISOString() ?? null,
  };
  await db.insertInto('api_tokens').values(row).execute();
  return { id, token: `kf_${id}_${secret}`, info: tokenInfo(row) };
}

/**
 * Resolves a presented token, or throws `unauthenticated`. Only a caller who holds the right
 * secret learns that the token expired or was revoked; anything else is "not valid".
 */
export async function authenticateToken(
  db: Db,
  presented: string | undefined,
  now = new Date(),
): Promise<Principal> {
  if (!presented) {
    throw new KeyferryError(
      'unauthenticated',
      'no API token: send it as the OSF-TOKEN header or as Authorization: Bearer <token>',
    );
  }
  const match = TOKEN_FORMAT.exec(presented.trim());
  const row = match
    ? await db
        .selectFrom('api_tokens')
        .selectAll()
        .where('id', '=', match[1] as string)
        .executeTakeFirst()
    : undefined;
  const expected = row ? Buffer.from(row.secret_hash, 'hex') : Buffer.alloc(32);
  const actual = Buffer.from(hashSecret(match?.[2] ?? ''), 'hex');
  if (!row || !timingSafeEqual(expected, actual)) {
    throw new KeyferryError('unauthenticated', 'the API token is not valid: check it, or create a new one');
  }
  if (row.revoked_at !== null) {
    throw new KeyferryError(
      'unauthenticated',
      `the API token ${row.id} was revoked at ${row.revoked_at}: use another token`,
    );
  }
  if (row.expires_at !== null && Date.parse(row.expires_at) <= now.getTime()) {
    throw new KeyferryError(
      'unauthenticated',
      `the API token ${row.id} expired at ${row.expires_at}: create a new one (keyferry tokens create, or keyferryd admin token create)`,
    );
  }
  return toPrincipal(row);
}

function toPrincipal(row: { id: string; factory_id: number; scopes: string }): Principal {
  const scopes = new Set(row.scopes.split(' ').filter((s): s is Scope => (SCOPES as string[]).includes(s)));
  return { tokenId: row.id, factoryId: row.factory_id, scopes };
}

/** Every token of a factory, newest first, revoked and expired ones included. */
export async function listApiTokens(db: Db, factoryId: number): Promise<TokenInfo[]> {
  const rows = await db
    .selectFrom('api_tokens')
    .selectAll()
    .where('factory_id', '=', factoryId)
    .orderBy('created_at', 'desc')
    .orderBy('id')
    .execute();
  return rows.map(tokenInfo);
}

/**
 * Revokes a token of the factory at once (the next request with it is refused). Revoking a
 * revoked token is a no-op that answers the first revocation's time.
 */
export async function revokeApiToken(
  db: Db,
  factoryId: number,
  id: string,
  now = new Date(),
): Promise<TokenInfo> {
  const row = await db
    .selectFrom('api_tokens')
    .selectAll()
    .where('id', '=', id)
    .where('factory_id', '=', factoryId)
    .executeTakeFirst();
  if (!row) {
    throw new KeyferryError('not_found', `token ${id} not found in this factory: see keyferry tokens list`);
  }
  if (row.revoked_at !== null) return tokenInfo(row);
  await db
    .updateTable('api_tokens')
    .set({ revoked_at: now.toISOString() })
    .where('id', '=', id)
    .where('revoked_at', 'is', null)
    .execute();
  return tokenInfo({ ...row, revoked_at: now.toISOString() });
}

/** Who made a change to the token list, for the audit log. */
export interface TokenChange {
  actor: string;
  correlationId: string;
}

/** Creates a token and records `token.create` (never the secret) in one transaction. */
export async function issueFactoryToken(
  database: Database,
  input: { factoryId: number; scopes: readonly string[]; description: string; expiresAt?: Date | undefined },
  change: TokenChange,
): Promise<{ token: string; info: TokenInfo }> {
  const scopes = parseScopes(input.scopes);
  if (!scopes.includes('read')) {
    throw new KeyferryError(
      'invalid_request',
      'scope write needs read too: send ["read", "write"] (a token that changes things but cannot read them cannot list what it changed, nor sign in to the console)',
    );
  }
  return database.db.transaction().execute(async (trx) => {
    const created = await createApiToken(trx, { ...input, scopes });
    await recordAudit(trx, {
      factoryId: input.factoryId,
      actor: change.actor,
      action: 'token.create',
      object: `token:${created.id}`,
      detail: {
        scopes: created.info.scopes,
        expiresAt: created.info.expiresAt,
        description: input.description,
      },
      correlationId: change.correlationId,
    });
    return { token: created.token, info: created.info };
  });
}

/** Revokes a token and records `token.revoke` in one transaction. */
export async function revokeFactoryToken(
  database: Database,
  factoryId: number,
  id: string,
  change: TokenChange,
): Promise<TokenInfo> {
  return transactionForFactory(database.db, factoryId, async (trx) => {
    const info = await revokeApiToken(trx, factoryId, id);
    await recordAudit(trx, {
      factoryId,
      actor: change.actor,
      action: 'token.revoke',
      object: `token:${id}`,
      detail: { revokedAt: info.revokedAt },
      correlationId: change.correlationId,
    });
    return info;
  });
}

function tokenInfo(row: {
  id: string;
  description: string;
  scopes: string;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
}): TokenInfo {
  return {
    id: row.id,
    description: row.description,
    scopes: row.scopes.split(' ').filter((s): s is Scope => (SCOPES as string[]).includes(s)),
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
  };
}

/**
 * The principal of a token already authenticated once (a console session keeps the token id,
 * never the token): undefined once the token is revoked, expired or gone, so revoking ends sessions.
 */
export async function principalOfTokenId(db: Db, tokenId: string): Promise<Principal | undefined> {
  const row = await db
    .selectFrom('api_tokens')
    .select(['id', 'factory_id', 'scopes', 'revoked_at', 'expires_at'])
    .where('id', '=', tokenId)
    .executeTakeFirst();
  if (!row || row.revoked_at !== null) return undefined;
  if (row.expires_at !== null && Date.parse(row.expires_at) <= Date.now()) return undefined;
  return toPrincipal(row);
}

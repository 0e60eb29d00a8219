import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { KeyferryError } from '@keyferry/core';
import type { Db } from '../storage/database.ts';

export type Scope = 'read' | 'write';
export const SCOPES: readonly Scope[] = ['read', 'write'];

/** Who is calling: one token, scoped to one factory. */
export interface Principal {
  tokenId: string;
  factoryId: number;
  scopes: ReadonlySet<Scope>;
}

/** `kf_<16 hex id>_<43 base64url secret>`: the id finds the row, the secret is checked by hash. */
const TOKEN_FORMAT = /^kf_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** Creates a token and returns its only plaintext copy; the database keeps the hash. */
export async function createApiToken(
  db: Db,
  input: { factoryId: number; scopes: readonly Scope[]; description: string; now?: Date },
): Promise<{ id: string; token: string }> {
  const id = randomBytes(8).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  await db
    .insertInto('api_tokens')
    .values({
      id,
      factory_id: input.factoryId,
      description: input.description,
      scopes: [...new Set(input.scopes)].sort().join(' '),
      secret_hash: hashSecret(secret),
      created_at: (input.now ?? new Date()).toISOString(),
      revoked_at: null,
    })
    .execute();
  return { id, token: `kf_${id}_${secret}` };
}

/** Resolves a presented token, or throws `unauthenticated` without saying which part was wrong. */
export async function authenticateToken(db: Db, presented: string | undefined): Promise<Principal> {
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
  if (!row || !timingSafeEqual(expected, actual) || row.revoked_at !== null) {
    throw new KeyferryError('unauthenticated', 'the API token is not valid: check it, or create a new one');
  }
  return toPrincipal(row);
}

function toPrincipal(row: { id: string; factory_id: number; scopes: string }): Principal {
  const scopes = new Set(row.scopes.split(' ').filter((s): s is Scope => (SCOPES as string[]).includes(s)));
  return { tokenId: row.id, factoryId: row.factory_id, scopes };
}

/**
 * The principal of a token already authenticated once (a console session keeps the token id,
 * never the token): undefined once the token is revoked or gone, so revoking ends sessions.
 */
export async function principalOfTokenId(db: Db, tokenId: string): Promise<Principal | undefined> {
  const row = await db
    .selectFrom('api_tokens')
    .select(['id', 'factory_id', 'scopes', 'revoked_at'])
    .where('id', '=', tokenId)
    .executeTakeFirst();
  return row && row.revoked_at === null ? toPrincipal(row) : undefined;
}

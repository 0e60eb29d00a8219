import { KeyferryError } from '@keyferry/core';
import type { FastifyRequest } from 'fastify';
import { type Factory, findFactoryById, findFactoryByName } from '../factories/factories.ts';
import type { Db } from '../storage/database.ts';
import { authenticateToken, type Principal, type Scope } from '../tokens/api-tokens.ts';

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
    factory?: Factory;
  }
}

/**
 * `OSF-TOKEN: <t>` (what fioctl sends) or `Authorization: Bearer <t>`, without surrounding white
 * space: the per-token rate limit counts this value, so a padded token is the token itself.
 */
export function presentedToken(request: FastifyRequest): string | undefined {
  const osf = request.headers['osf-token'];
  if (typeof osf === 'string' && osf.trim() !== '') return osf.trim();
  const auth = request.headers.authorization;
  if (auth && /^bearer\s+/i.test(auth)) return auth.replace(/^bearer\s+/i, '').trim();
  return undefined;
}

export async function authenticate(db: Db, request: FastifyRequest): Promise<Principal> {
  const principal = await authenticateToken(db, presentedToken(request));
  request.principal = principal;
  return principal;
}

/** Read for GET/HEAD, write for everything else. */
export function requiredScope(method: string): Scope {
  return method === 'GET' || method === 'HEAD' ? 'read' : 'write';
}

/**
 * Resolves `/ota/factories/<name>/…` for the caller. Another factory's name answers exactly
 * like a name that does not exist, so a token cannot probe which factories there are.
 */
export async function authorizeFactory(db: Db, request: FastifyRequest, name: string): Promise<Factory> {
  const principal = request.principal ?? (await authenticate(db, request));
  const factory = await findFactoryByName(db, name);
  if (!factory || factory.id !== principal.factoryId) {
    throw new KeyferryError('not_found', `factory ${name} not found (or this token may not see it)`);
  }
  const scope = requiredScope(request.method);
  if (!principal.scopes.has(scope)) {
    throw new KeyferryError(
      'forbidden',
      `this token lacks the "${scope}" scope needed for ${request.method}`,
    );
  }
  request.factory = factory;
  return factory;
}

export async function principalFactory(db: Db, principal: Principal): Promise<Factory | undefined> {
  return findFactoryById(db, principal.factoryId);
}

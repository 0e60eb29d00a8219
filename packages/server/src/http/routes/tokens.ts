import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ServiceContext } from '../../context.ts';
import {
  issueFactoryToken,
  listApiTokens,
  MAX_TOKEN_DESCRIPTION,
  revokeFactoryToken,
  type TokenInfo,
} from '../../tokens/api-tokens.ts';
import { parseBody } from '../validate.ts';
import { changeContext } from './el2g.ts';

const createSchema = z.strictObject({
  description: z.string().min(1).max(MAX_TOKEN_DESCRIPTION),
  scopes: z.array(z.string()).min(1, 'give at least one scope: read, write').max(2),
  /** ISO 8601; absent: the token never expires. */
  'expires-at': z.string().max(40).optional(),
});
const idParam = z.strictObject({
  factory: z.string(),
  id: z.string().regex(/^[0-9a-f]{16}$/, 'a token id is 16 lowercase hex digits (see keyferry tokens list)'),
});

function render(info: TokenInfo) {
  return {
    id: info.id,
    description: info.description,
    scopes: info.scopes,
    'created-at': info.createdAt,
    'expires-at': info.expiresAt,
    'revoked-at': info.revokedAt,
  };
}

/** The factory's API tokens: list (never secrets), create (secret shown once), revoke. */
export async function tokensRoutes(app: FastifyInstance, ctx: ServiceContext): Promise<void> {
  app.get('/tokens/', async (request) =>
    (await listApiTokens(ctx.database.db, request.factory!.id)).map(render),
  );

  app.post('/tokens/', async (request, reply) => {
    const body = parseBody(createSchema, request.body);
    const expires = body['expires-at'];
    const created = await issueFactoryToken(
      ctx.database,
      {
        factoryId: request.factory!.id,
        scopes: body.scopes,
        description: body.description,
        expiresAt: expires === undefined ? undefined : new Date(expires),
      },
      changeContext(request),
    );
    reply.code(201);
    return { ...render(created.info), token: created.token };
  });

  app.delete('/tokens/:id', async (request) => {
    const { id } = parseBody(idParam, request.params, 'path');
    return render(await revokeFactoryToken(ctx.database, request.factory!.id, id, changeContext(request)));
  });
}

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
  /** ISO 8601 with a time and an offset; absent: the token never expires. */
  'expires-at': z
    .string()
    .max(40)
    .refine(
      isIsoTime,
      'an ISO 8601 time with a date that exists and an offset, e.g. 2031-02-28T00:00:00Z or 2031-02-28T09:00:00+01:00',
    )
    .optional(),
});

/** A date-time with an offset whose calendar date exists (new Date() rolls 02-30 over to 03-02). */
function isIsoTime(text: string): boolean {
  const m =
    /^(\d{4})-(\d{2})-(\d{2})T([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,9})?)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$/.exec(
      text,
    );
  if (!m) return false;
  const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(Date.UTC(year, month - 1, day));
  return date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 && date.getUTCDate() === day;
}
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

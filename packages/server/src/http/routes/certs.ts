import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ServiceContext } from '../../context.ts';
import { getFactoryPki, updateFactoryPki } from '../../pki/factory-pki.ts';
import { parseBody } from '../validate.ts';

const MAX_PEM_CHARS = 64 * 1024;
const pem = z.string().max(MAX_PEM_CHARS, `at most ${MAX_PEM_CHARS} characters of PEM`);
const patchSchema = z.strictObject({
  'root-crt': pem.optional(),
  'tls-crt': pem.optional(),
  'ca-crt': pem.optional(),
});

/** GET/PATCH /ota/factories/<f>/certs/: the factory PKI. */
export async function certsRoutes(app: FastifyInstance, ctx: ServiceContext): Promise<void> {
  app.get('/certs/', async (request) => getFactoryPki(ctx.database.db, request.factory!.id));
  app.patch('/certs/', async (request) => {
    const patch = parseBody(patchSchema, request.body);
    return updateFactoryPki(ctx.database.db, request.factory!, patch, {
      actor: `token:${request.principal!.tokenId}`,
      correlationId: request.id,
    });
  });
}

import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ServiceContext } from '../../context.ts';
import { getFactoryPki, updateFactoryPki } from '../../pki/factory-pki.ts';
import { requestPkiCsrs } from '../../pki/pki-requests.ts';
import { parseBody } from '../validate.ts';

const MAX_PEM_CHARS = 64 * 1024;
const MAX_CHANGE_META_CHARS = 256;
/** fioctl's ChangeMeta has four fields; a little room for other clients, no more. */
const MAX_CHANGE_META_FIELDS = 8;
const pem = z.string().max(MAX_PEM_CHARS, `at most ${MAX_PEM_CHARS} characters of PEM`);
const patchSchema = z.strictObject({
  'root-crt': pem.optional(),
  'tls-crt': pem.optional(),
  'ca-crt': pem.optional(),
  'ca-revoke-crl': pem.optional(),
  'est-tls-crt': pem.optional(),
  // fioctl's ChangeMeta, sent with every PATCH; the service keeps its own (GET shows it).
  'change-meta': z
    .record(z.string().max(64), z.string().max(MAX_CHANGE_META_CHARS))
    .refine(
      (meta) => Object.keys(meta).length <= MAX_CHANGE_META_FIELDS,
      `at most ${MAX_CHANGE_META_FIELDS} change-meta fields`,
    )
    .optional(),
  'remove-device-cas': z.boolean().optional(),
});
const postSchema = z.strictObject({
  'first-time-init': z.boolean().optional(),
  'ca-csr': z.boolean().optional(),
  'tls-csr': z.boolean().optional(),
  'est-tls-csr': z.boolean().optional(),
});

/** GET/POST/PATCH /ota/factories/<f>/certs/: the factory PKI, as fioctl's client speaks it. */
export async function certsRoutes(app: FastifyInstance, ctx: ServiceContext): Promise<void> {
  // fioctl reads 206 as "Factory PKI is not configured"; the body still carries the tls-csr.
  app.get('/certs/', async (request, reply) => {
    const { configured, view } = await getFactoryPki(ctx.database.db, request.factory!.id);
    return reply.code(configured ? 200 : 206).send(view);
  });
  app.post('/certs/', async (request, reply) => {
    const body = parseBody(postSchema, request.body);
    const csrs = await requestPkiCsrs(ctx.database.db, ctx, request.factory!, ctx.config.domain, body, {
      actor: `token:${request.principal!.tokenId}`,
      correlationId: request.id,
    });
    return reply.code(201).send(csrs);
  });
  app.patch('/certs/', async (request) => {
    const patch = parseBody(patchSchema, request.body);
    return updateFactoryPki(ctx.database.db, request.factory!, patch, {
      actor: `token:${request.principal!.tokenId}`,
      correlationId: request.id,
    });
  });
}

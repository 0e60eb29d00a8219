import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { ServiceContext } from '../../context.ts';
import { configureAwsIot } from '../../el2g/aws-iot.ts';
import { completeDeviceGatewayCa, requestDeviceGatewayCa } from '../../el2g/device-gateway.ts';
import { listIntermediateCas } from '../../el2g/intermediate-cas.ts';
import { el2gOverview } from '../../el2g/overview.ts';
import type { ChangeContext } from '../../el2g/secure-objects.ts';
import { listSecureObjects } from '../../el2g/secure-objects.ts';
import { MAX_ROW_ID, parseBody } from '../validate.ts';

const MAX_PEM_CHARS = 64 * 1024;
const pem = z.string().min(1).max(MAX_PEM_CHARS, `at most ${MAX_PEM_CHARS} characters of PEM`);
const putSchema = z.strictObject({
  // fioctl sent back the id as it received it; accept the number or its decimal string.
  id: z
    .union([
      z.number().int().positive(),
      z
        .string()
        .regex(/^[1-9][0-9]{0,15}$/)
        .transform(Number),
    ])
    .pipe(z.number().max(MAX_ROW_ID)),
  'root-ca': pem,
  'signed-cert': pem,
});

const awsIotSchema = z.strictObject({
  // Checked in the domain (configureAwsIot) so the message can say what AWS codes look like.
  'registration-code': z
    .string()
    .max(1024, 'at most 64 characters (an AWS registration code is 64 hex digits)'),
});

export function changeContext(request: FastifyRequest): ChangeContext {
  return { actor: `token:${request.principal!.tokenId}`, correlationId: request.id };
}

/** The factory API of EdgeLock 2GO (fioctl's `el2g/…` calls). */
export async function el2gRoutes(app: FastifyInstance, ctx: ServiceContext): Promise<void> {
  const db = ctx.database.db;
  app.get('/el2g/overview/', async (request) => el2gOverview(db, request.factory!, ctx.config.domain));

  app.get('/el2g/secure-objects/', async (request) =>
    (await listSecureObjects(db, request.factory!.id)).map((o) => ({
      id: o.id,
      type: o.type,
      name: o.name,
      'object-id': o.objectId,
    })),
  );

  app.get('/el2g/intermediate-cas/', async (request) =>
    (await listIntermediateCas(db, request.factory!.id)).map((ca) => ({
      id: ca.id,
      name: ca.name,
      algorithm: ca.algorithm,
      value: ca.certificate,
    })),
  );

  // fioctl posts an empty body with Content-Type: application/json here: in this route's own
  // scope an empty JSON body means "no body"; anything else still parses as strict JSON.
  await app.register(async (scope) => {
    const json = scope.getDefaultJsonParser('error', 'error');
    scope.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) =>
      body === '' ? done(null, undefined) : json(request, body as string, done),
    );
    scope.post('/el2g/device-gateway/', async (request, reply) => {
      parseBody(z.strictObject({}), request.body);
      const { id, value, created } = await requestDeviceGatewayCa(
        db,
        ctx.custody,
        request.factory!,
        changeContext(request),
      );
      return reply.code(created ? 201 : 200).send({ id, value });
    });
  });

  app.post('/el2g/aws-iot/', async (request, reply) => {
    const body = parseBody(awsIotSchema, request.body);
    const result = await configureAwsIot(
      db,
      ctx.custody,
      request.factory!,
      body['registration-code'],
      changeContext(request),
    );
    return reply.code(result.created ? 201 : 200).send({ ca: result.ca, cert: result.cert });
  });

  app.put('/el2g/device-gateway/', async (request) => {
    const body = parseBody(putSchema, request.body);
    const result = await completeDeviceGatewayCa(
      db,
      request.factory!,
      { id: body.id, rootCa: body['root-ca'], signedCert: body['signed-cert'] },
      changeContext(request),
    );
    return {
      id: result.ca.id,
      name: result.ca.name,
      algorithm: result.ca.algorithm,
      value: result.ca.certificate,
      created: result.created,
      'secure-objects': result.objects.map((o) => ({
        id: o.id,
        type: o.type,
        name: o.name,
        'object-id': o.objectId,
      })),
      assigned: result.assigned,
    };
  });
}

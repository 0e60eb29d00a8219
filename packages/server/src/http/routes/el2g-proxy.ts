import { MAX_DURATION_SECONDS } from '@keyferry/core';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ServiceContext } from '../../context.ts';
import {
  assignObjectsToGroups,
  getDeviceGroup,
  listDeviceGroups,
  objectGroups,
  unassignObject,
} from '../../el2g/group-assignments.ts';
import { getIntermediateCa, type IntermediateCa, listIntermediateCas } from '../../el2g/intermediate-cas.ts';
import { productCatalogue } from '../../el2g/products.ts';
import {
  deleteSecureObject,
  ensureSecureObject,
  getSecureObject,
  listSecureObjects,
  OBJECT_ID,
  setCertificateTiming,
} from '../../el2g/secure-objects.ts';
import { transactionForFactory } from '../../storage/database.ts';
import { decimalQuery, MAX_ROW_ID, parseBody } from '../validate.ts';
import { changeContext } from './el2g.ts';

const idParam = decimalQuery(1, MAX_ROW_ID);
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const createObjectSchema = z.strictObject({
  name: z.string().regex(NAME, 'letters, digits, dot, dash and underscore, at most 64'),
  type: z.enum(['KEYPAIR', 'CERTIFICATE']),
  objectId: z
    .string()
    .transform((s) => s.replace(/^0x/i, '').toLowerCase())
    .pipe(z.string().regex(OBJECT_ID, '8 hex digits, e.g. 83000044')),
  caId: z.number().int().positive().max(MAX_ROW_ID).optional(),
  keypairId: z.number().int().positive().max(MAX_ROW_ID).optional(),
  validityDays: z.number().int().min(1).max(36_525).optional(),
  renewalValidityDays: z.number().int().min(1).max(36_525).optional(),
  renewalWindowDays: z.number().int().min(1).max(36_525).optional(),
});
const seconds = z.number().int().min(1).max(MAX_DURATION_SECONDS);
const timingSchema = z.strictObject({
  validitySeconds: seconds.optional(),
  renewalValiditySeconds: seconds.optional(),
  renewalWindowSeconds: seconds.optional(),
});
const assignSchema = z.strictObject({
  deviceGroupIds: z.array(z.number().int().positive().max(MAX_ROW_ID)).min(1).max(100),
});

function caView(ca: IntermediateCa) {
  return {
    id: ca.id,
    name: ca.name,
    algorithm: ca.algorithm,
    certificate: ca.certificate,
    createdAt: ca.createdAt,
    updatedAt: ca.updatedAt,
  };
}

/**
 * The provisioning API (EdgeLock 2GO-shaped, camelCase) under `el2g-proxy/`: products,
 * device groups, secure objects and their group assignments, intermediate CAs. Every change
 * commits with its audit entries in one transaction.
 */
export async function el2gProxyRoutes(app: FastifyInstance, ctx: ServiceContext): Promise<void> {
  const db = ctx.database.db;
  const params = (raw: unknown, name = 'id') =>
    parseBody(z.object({ [name]: idParam }), raw, 'path')[name] as number;

  app.get('/el2g-proxy/products', async () =>
    [...productCatalogue(ctx.config).values()].map((p) => ({ nc12: p.nc12, commercialName: p.name })),
  );

  app.get('/el2g-proxy/device-groups', async (request) => ({
    content: await listDeviceGroups(db, request.factory!.id),
  }));
  app.get('/el2g-proxy/device-groups/:id', async (request) =>
    getDeviceGroup(db, request.factory!.id, params(request.params)),
  );
  app.get('/el2g-proxy/device-groups/:id/secure-objects', async (request) => {
    const group = await getDeviceGroup(db, request.factory!.id, params(request.params));
    const ids = await db
      .selectFrom('group_objects')
      .select('secure_object_id')
      .where('group_id', '=', group.id)
      .execute();
    const wanted = new Set(ids.map((r) => r.secure_object_id));
    return { content: (await listSecureObjects(db, request.factory!.id)).filter((o) => wanted.has(o.id)) };
  });

  app.get('/el2g-proxy/secure-objects', async (request) => ({
    content: await listSecureObjects(db, request.factory!.id),
  }));
  app.post('/el2g-proxy/secure-objects', async (request, reply) => {
    const body = parseBody(createObjectSchema, request.body);
    const factoryId = request.factory!.id;
    const change = changeContext(request);
    const result = await transactionForFactory(db, factoryId, async (trx) => {
      const now = new Date();
      const { object, created } = await ensureSecureObject(trx, factoryId, body, change, now);
      const groups = await listDeviceGroups(trx, factoryId);
      await assignObjectsToGroups(
        trx,
        factoryId,
        [object.id],
        groups.map((g) => g.id),
        change,
        now,
      );
      return { object, created };
    });
    return reply.code(result.created ? 201 : 200).send(result.object);
  });
  app.get('/el2g-proxy/secure-objects/:id', async (request) =>
    getSecureObject(db, request.factory!.id, params(request.params)),
  );
  app.patch('/el2g-proxy/secure-objects/:id', async (request) => {
    const id = params(request.params);
    const body = parseBody(timingSchema, request.body);
    const change = changeContext(request);
    return db
      .transaction()
      .execute((trx) => setCertificateTiming(trx, request.factory!.id, id, body, change, new Date()));
  });
  app.delete('/el2g-proxy/secure-objects/:id', async (request, reply) => {
    const id = params(request.params);
    await db
      .transaction()
      .execute((trx) => deleteSecureObject(trx, request.factory!.id, id, changeContext(request), new Date()));
    return reply.code(204).send();
  });

  app.get('/el2g-proxy/secure-objects/:id/device-groups', async (request) => {
    const object = await getSecureObject(db, request.factory!.id, params(request.params));
    const ids = new Set(await objectGroups(db, object.id));
    return { content: (await listDeviceGroups(db, request.factory!.id)).filter((g) => ids.has(g.id)) };
  });
  app.post('/el2g-proxy/secure-objects/:id/device-groups', async (request) => {
    const id = params(request.params);
    const body = parseBody(assignSchema, request.body);
    const factoryId = request.factory!.id;
    const assigned = await transactionForFactory(db, factoryId, async (trx) => {
      await getSecureObject(trx, factoryId, id);
      return assignObjectsToGroups(
        trx,
        factoryId,
        [id],
        body.deviceGroupIds,
        changeContext(request),
        new Date(),
      );
    });
    return { assigned };
  });
  app.delete('/el2g-proxy/secure-objects/:id/device-groups/:groupId', async (request, reply) => {
    const id = params(request.params);
    const groupId = params(request.params, 'groupId');
    await db
      .transaction()
      .execute((trx) =>
        unassignObject(trx, request.factory!.id, id, groupId, changeContext(request), new Date()),
      );
    return reply.code(204).send();
  });

  app.get('/el2g-proxy/intermediate-cas', async (request) => ({
    content: (await listIntermediateCas(db, request.factory!.id)).map(caView),
  }));
  app.get('/el2g-proxy/intermediate-cas/:id', async (request) =>
    caView(await getIntermediateCa(db, request.factory!.id, params(request.params))),
  );
}

import { DURATION_FORMAT, parseDuration } from '@keyferry/core';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import {
  addDevices,
  type BatchRequest,
  deleteDevices,
  MAX_DEVICES_PER_REQUEST,
} from '../../allowlist/allow-list.ts';
import {
  allDevices,
  DEFAULT_DEVICE_PAGE,
  groupsWithDevices,
  listDevices,
  MAX_DEVICE_PAGE,
} from '../../allowlist/device-listing.ts';
import { DELETE_SETTLED, refuseIfNoneSettled } from '../../allowlist/device-results.ts';
import { planUsage } from '../../allowlist/plan.ts';
import type { ServiceContext } from '../../context.ts';
import { expiringCertificates } from '../../el2g/expiring.ts';
import { MAX_ROTATE_IDS, markForRotation } from '../../el2g/rotation.ts';
import { jsonArrayStream } from '../json-stream.ts';
import { decimalQuery, MAX_ROW_ID, parseBody } from '../validate.ts';

/** Longest string accepted where a device id goes (a valid one has 38 or 42 characters). */
const MAX_ID_CHARS = 100;
const batchSchema = z.strictObject({
  'product-id': z.string().regex(/^[0-9]{12}$/, 'a 12NC is 12 decimal digits, e.g. 935389312472'),
  devices: z
    .array(
      z
        .string({ error: 'device ids are JSON strings (a 42-digit id does not fit a JSON number)' })
        .max(MAX_ID_CHARS, `a device id has at most ${MAX_ID_CHARS} characters`),
    )
    .min(1, 'name at least one device')
    .max(MAX_DEVICES_PER_REQUEST, `at most ${MAX_DEVICES_PER_REQUEST} devices a request: split the list`),
  production: z.boolean().default(false),
});
const listQuery = z
  .strictObject({
    limit: decimalQuery(1, MAX_DEVICE_PAGE).default(DEFAULT_DEVICE_PAGE),
    after: decimalQuery(0, MAX_ROW_ID).optional(),
    page: decimalQuery(1, 1_000_000).optional(),
  })
  .refine((q) => q.after === undefined || q.page === undefined, 'use either after= or page=, not both');

const rotateSchema = z.strictObject({
  devices: z
    .array(z.string().max(MAX_ID_CHARS, `a device id has at most ${MAX_ID_CHARS} characters`))
    .min(1, 'name at least one device')
    .max(MAX_ROTATE_IDS, `at most ${MAX_ROTATE_IDS} devices a request: rotate a group or all instead`)
    .optional(),
  group: z.string().min(1).max(128).optional(),
  all: z.literal(true).optional(),
  object: z.string().min(1).max(128).optional(),
});
const expiringQuery = z.strictObject({
  within: z
    .string()
    .max(16)
    .refine((t) => parseDuration(t) !== undefined, `within is a duration: ${DURATION_FORMAT}`),
});

/** Without any of these, `GET el2g/devices/` answers the whole allow-list (streamed). */
const PAGING_PARAMETERS = ['limit', 'after', 'page'] as const;

/** Header naming the keyset cursor of the next page (also given as a `Link: rel="next"`). */
export const NEXT_CURSOR_HEADER = 'x-next-cursor';
/** Header on a first page: the groups holding devices, so a streaming table can size its columns. */
export const DEVICE_GROUPS_HEADER = 'x-device-groups';

function toBatch(body: z.output<typeof batchSchema>): BatchRequest {
  return { nc12: body['product-id'], ids: body.devices, production: body.production };
}

function change(request: FastifyRequest) {
  return { actor: `token:${request.principal!.tokenId}`, correlationId: request.id };
}

/** `el2g/devices/` (the allow-list) and `el2g/plan/` (plan and usage) of one factory. */
export async function el2gDevicesRoutes(app: FastifyInstance, ctx: ServiceContext): Promise<void> {
  const db = ctx.database.db;

  app.get('/el2g/devices/', async (request, reply) => {
    const q = parseBody(listQuery, request.query, 'query string');
    const factoryId = request.factory!.id;
    if (!PAGING_PARAMETERS.some((name) => name in (request.query as object))) {
      // fioctl asks once, without paging, and expects every device
      reply.header(DEVICE_GROUPS_HEADER, (await groupsWithDevices(db, factoryId)).join(','));
      return reply.type('application/json').send(jsonArrayStream(allDevices(db, factoryId)));
    }
    const page = await listDevices(db, factoryId, {
      limit: q.limit,
      ...(q.after !== undefined ? { after: q.after } : {}),
      ...(q.page !== undefined ? { offset: (q.page - 1) * q.limit } : {}),
    });
    if (q.after === undefined && (q.page ?? 1) === 1) {
      reply.header(DEVICE_GROUPS_HEADER, (await groupsWithDevices(db, factoryId)).join(','));
    }
    if (page.next !== null) {
      const base = request.url.split('?')[0];
      const next = q.page !== undefined ? `page=${q.page + 1}` : `after=${page.next}`;
      reply.header(NEXT_CURSOR_HEADER, String(page.next));
      reply.header('link', `<${base}?limit=${q.limit}&${next}>; rel="next"`);
    }
    return page.devices;
  });

  app.post('/el2g/devices/', async (request) => {
    const body = parseBody(batchSchema, request.body);
    return addDevices(ctx, request.factory!, toBatch(body), change(request), new Date(), {
      refuseIfNoneAdded: true,
    });
  });

  app.delete('/el2g/devices/', async (request) => {
    const body = parseBody(batchSchema, request.body);
    const answer = await deleteDevices(ctx, request.factory!, toBatch(body), change(request));
    return refuseIfNoneSettled(answer, DELETE_SETTLED, 'deleted');
  });

  app.get('/el2g/plan/', async (request) => planUsage(db, request.factory!.id));

  app.post('/el2g/devices/rotate', async (request) => {
    const body = parseBody(rotateSchema, request.body);
    return markForRotation(db, request.factory!.id, body, change(request));
  });

  app.get('/el2g/certificates/expiring', async (request) => {
    const q = parseBody(expiringQuery, request.query, 'query string');
    const now = new Date();
    const until = new Date(now.getTime() + parseDuration(q.within)! * 1000);
    return {
      within: q.within,
      until: until.toISOString(),
      ...(await expiringCertificates(db, request.factory!.id, until)),
    };
  });
}

import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ServiceContext } from '../../context.ts';
import {
  DEFAULT_GATEWAY_DEVICE_PAGE,
  listGatewayDevices,
  MAX_GATEWAY_DEVICE_PAGE,
} from '../../gateway/device-registry.ts';
import { decimalQuery, MAX_ROW_ID, parseBody } from '../validate.ts';

const listQuery = z
  .strictObject({
    limit: decimalQuery(1, MAX_GATEWAY_DEVICE_PAGE).default(DEFAULT_GATEWAY_DEVICE_PAGE),
    after: decimalQuery(0, MAX_ROW_ID).optional(),
    page: decimalQuery(1, 1_000_000).optional(),
  })
  .refine((q) => q.after === undefined || q.page === undefined, 'use either after= or page=, not both');

/** `devices/`: devices registered at the device gateway (first mTLS call), paged like el2g/devices/. */
export async function gatewayDevicesRoutes(app: FastifyInstance, ctx: ServiceContext): Promise<void> {
  app.get('/devices/', async (request, reply) => {
    const q = parseBody(listQuery, request.query, 'query string');
    const page = await listGatewayDevices(ctx.database.db, request.factory!.id, {
      limit: q.limit,
      ...(q.after !== undefined ? { after: q.after } : {}),
      ...(q.page !== undefined ? { offset: (q.page - 1) * q.limit } : {}),
    });
    if (page.next !== null) {
      const base = request.url.split('?')[0];
      const next = q.page !== undefined ? `page=${q.page + 1}` : `after=${page.next}`;
      reply.header('x-next-cursor', String(page.next));
      reply.header('link', `<${base}?limit=${q.limit}&${next}>; rel="next"`);
    }
    return page.devices;
  });
}

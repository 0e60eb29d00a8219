import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { type BulkJobRunner, getBulkJob, MAX_JOB_DEVICES } from '../../allowlist/bulk-jobs.ts';
import {
  deviceProduct,
  deviceProvisionings,
  findAllowListedDevice,
} from '../../allowlist/device-provisioning.ts';
import type { ServiceContext } from '../../context.ts';
import { parseBody } from '../validate.ts';

const deviceParam = z.object({ id: z.string().max(100) });
const jobParam = z.object({ id: z.string().uuid('a bulk job id is a UUID') });
const jobSchema = z.strictObject({
  nc12: z.string().regex(/^[0-9]{12}$/, 'a 12NC is 12 decimal digits, e.g. 935389312472'),
  production: z.boolean().default(false),
  deviceIds: z
    .array(
      z
        .string({ error: 'device ids are JSON strings (a 42-digit id does not fit a JSON number)' })
        .max(100, 'a device id has at most 100 characters'),
    )
    .min(1, 'name at least one device')
    .max(MAX_JOB_DEVICES, `at most ${MAX_JOB_DEVICES} devices a job: split it into several jobs`),
});

/**
 * The device part of the provisioning API (EdgeLock 2GO-shaped, camelCase): a device's
 * product and per-object provisioning state, and asynchronous bulk registration jobs.
 */
export async function el2gProxyDevicesRoutes(
  app: FastifyInstance,
  ctx: ServiceContext,
  jobs: BulkJobRunner,
): Promise<void> {
  const db = ctx.database.db;

  app.get('/el2g-proxy/devices/:id/product', async (request) => {
    const { id } = parseBody(deviceParam, request.params, 'path');
    return deviceProduct(ctx.config, await findAllowListedDevice(db, request.factory!.id, id));
  });

  app.get('/el2g-proxy/rtp/devices/:id/secure-object-provisionings', async (request) => {
    const { id } = parseBody(deviceParam, request.params, 'path');
    const device = await findAllowListedDevice(db, request.factory!.id, id);
    return { content: await deviceProvisionings(db, device) };
  });

  app.post('/el2g-proxy/device-jobs', async (request, reply) => {
    const body = parseBody(jobSchema, request.body);
    const job = await jobs.submit(request.factory!, body, {
      actor: `token:${request.principal!.tokenId}`,
      correlationId: request.id,
    });
    return reply
      .code(202)
      .header('location', `${request.url.replace(/\/$/, '')}/${job.id}`)
      .send(job);
  });

  app.get('/el2g-proxy/device-jobs/:id', async (request) => {
    const { id } = parseBody(jobParam, request.params, 'path');
    return getBulkJob(db, request.factory!.id, id);
  });
}

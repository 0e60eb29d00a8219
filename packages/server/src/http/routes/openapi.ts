import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';

/** docs/openapi.yaml of the checkout keyferryd runs from; a test keeps it in sync with the routes. */
export const OPENAPI_FILE = new URL('../../../../../docs/openapi.yaml', import.meta.url);

/** GET /openapi.yaml: the management API description, public like /healthz. */
export async function openapiRoutes(app: FastifyInstance): Promise<void> {
  const text = readFileSync(OPENAPI_FILE, 'utf8');
  app.get('/openapi.yaml', async (_request, reply) =>
    reply.type('application/yaml; charset=utf-8').send(text),
  );
}

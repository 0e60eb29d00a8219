import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { listAudit } from '../../audit/audit-log.ts';
import type { ServiceContext } from '../../context.ts';
import { decimalQuery, MAX_ROW_ID, parseBody } from '../validate.ts';

export const MAX_AUDIT_PAGE = 500;
const querySchema = z.strictObject({
  before: decimalQuery(1, MAX_ROW_ID).optional(),
  limit: decimalQuery(1, MAX_AUDIT_PAGE).default(100),
  'correlation-id': z.string().max(100).optional(),
});

/** GET /ota/factories/<f>/audit/?before=&limit=&correlation-id=: newest first. */
export async function auditRoutes(app: FastifyInstance, ctx: ServiceContext): Promise<void> {
  app.get('/audit/', async (request) => {
    const q = parseBody(querySchema, request.query, 'query string');
    const entries = await listAudit(ctx.database.db, request.factory!.id, {
      limit: q.limit,
      ...(q.before !== undefined ? { before: q.before } : {}),
      ...(q['correlation-id'] !== undefined ? { correlationId: q['correlation-id'] } : {}),
    });
    const last = entries[entries.length - 1];
    return { entries, next: entries.length === q.limit && last ? last.id : null };
  });
}

import type { FastifyInstance } from 'fastify';
import type { ServiceContext } from '../../context.ts';
import { publishedCrl } from '../../revocation/published-crl.ts';

/**
 * GET /crl/<factory>/<ca-id>.crl: an intermediate CA's CRL (DER, application/pkix-crl), without
 * a token — CRLs are signed public data, and a relying party (a gateway behind a proxy, an
 * auditor with openssl) has no factory token.
 */
export async function crlRoutes(app: FastifyInstance, ctx: ServiceContext): Promise<void> {
  app.get<{ Params: { factory: string; file: string } }>('/crl/:factory/:file', async (request, reply) => {
    const crl = await publishedCrl(
      { db: ctx.database.db, custody: ctx.custody },
      request.params.factory,
      request.params.file,
    );
    return reply
      .type('application/pkix-crl')
      .header('cache-control', 'no-cache')
      .header('last-modified', crl.thisUpdate.toUTCString())
      .header('x-crl-number', String(crl.crlNumber))
      .send(Buffer.from(crl.der));
  });
}

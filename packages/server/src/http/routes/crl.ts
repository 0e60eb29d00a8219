import type { FastifyInstance } from 'fastify';
import type { ServiceContext } from '../../context.ts';
import { publishedCrl } from '../../revocation/published-crl.ts';

/**
 * GET /crl/<factory>/<ca-id>.crl: an intermediate CA's CRL (DER, application/pkix-crl), without
 * a token — CRLs are signed public data, and a relying party (a gateway behind a proxy, an
 * auditor with openssl) has no token. Each signed CRL has its own strong ETag (CA, CRL number,
 * signing time): a relying party that fetches again with `If-None-Match` (curl --etag-compare)
 * gets 304 until the CA signs a new one, not the whole list again. `If-Modified-Since` is not
 * answered with 304: Last-Modified has whole seconds, and two CRLs can be signed within one.
 */
export async function crlRoutes(app: FastifyInstance, ctx: ServiceContext): Promise<void> {
  app.get<{ Params: { factory: string; file: string } }>('/crl/:factory/:file', async (request, reply) => {
    const crl = await publishedCrl(
      { db: ctx.database.db, custody: ctx.custody },
      request.params.factory,
      request.params.file,
    );
    // the signing time too: a database restored from a backup signs CRL numbers again
    const etag = `"crl-${crl.caId}-${crl.crlNumber}-${crl.thisUpdate.getTime().toString(36)}"`;
    reply
      .header('cache-control', 'no-cache')
      .header('etag', etag)
      .header('last-modified', crl.thisUpdate.toUTCString())
      .header('x-crl-number', String(crl.crlNumber));
    if (matchesEtag(request.headers['if-none-match'], etag)) return reply.code(304).send();
    return reply.type('application/pkix-crl').send(Buffer.from(crl.der));
  });
}

/** Whether an If-None-Match list (RFC 9110 §13.1.2: `*`, or tags, weak ones too) names `etag`. */
function matchesEtag(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header.split(',').some((tag) => {
    const t = tag.trim();
    return t === '*' || t === etag || t === `W/${etag}`;
  });
}

import type { FastifyInstance, FastifyReply } from 'fastify';
import type { ServiceContext } from '../../context.ts';
import { type CrlHead, crlNamed, currentCrlHead } from '../../revocation/crl-store.ts';
import { publishedCaId } from '../../revocation/published-crl.ts';

/**
 * GET /crl/<factory>/<ca-id>.crl: an intermediate CA's CRL (DER, application/pkix-crl), without
 * a token — CRLs are signed public data, and a relying party (a gateway behind a proxy, an
 * auditor with openssl) has no token. Each signed CRL has its own strong ETag (CA, CRL number,
 * signing time): a relying party that fetches again with `If-None-Match` (curl --etag-compare)
 * gets 304 until the CA signs a new one, not the whole list again; a 304 does not read the CRL
 * from the database either. `If-Modified-Since` is not answered with 304: Last-Modified has
 * whole seconds, and two CRLs can be signed within one.
 */
export async function crlRoutes(app: FastifyInstance, ctx: ServiceContext): Promise<void> {
  app.get<{ Params: { factory: string; file: string } }>('/crl/:factory/:file', async (request, reply) => {
    const deps = { db: ctx.database.db, custody: ctx.custody };
    const caId = await publishedCaId(deps.db, request.params.factory, request.params.file);
    const head = await currentCrlHead(deps, caId);
    if (matchesEtag(request.headers['if-none-match'], crlEtag(head))) {
      return describe(reply, head).code(304).send();
    }
    // the headers name the CRL sent: the stored one may be newer than the head read
    const crl = await crlNamed(deps.db, head);
    // the CRL's own bytes, not a copy: concurrent fetches share them
    const der = Buffer.from(crl.der.buffer, crl.der.byteOffset, crl.der.byteLength);
    return describe(reply, crl).type('application/pkix-crl').send(der);
  });
}

/** The headers naming the signed CRL `crl`. */
function describe(reply: FastifyReply, crl: CrlHead): FastifyReply {
  return reply
    .header('cache-control', 'no-cache')
    .header('etag', crlEtag(crl))
    .header('last-modified', crl.thisUpdate.toUTCString())
    .header('x-crl-number', String(crl.crlNumber));
}

/** A signed CRL's strong ETag; the signing time too: a database restored from a backup signs CRL numbers again. */
function crlEtag(crl: CrlHead): string {
  return `"crl-${crl.caId}-${crl.crlNumber}-${crl.thisUpdate.getTime().toString(36)}"`;
}

/** Whether an If-None-Match list (RFC 9110 §13.1.2: `*`, or tags, weak ones too) names `etag`. */
function matchesEtag(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header.split(',').some((tag) => {
    const t = tag.trim();
    return t === '*' || t === etag || t === `W/${etag}`;
  });
}

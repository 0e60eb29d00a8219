import type { FastifyInstance } from 'fastify';

/** One registered route, as the OpenAPI check compares it with docs/openapi.yaml. */
export interface RouteEntry {
  method: string;
  /** Fastify's URL with `:param` segments. */
  url: string;
}

const tables = new WeakMap<FastifyInstance, RouteEntry[]>();

/** The web console's pages are for browsers (docs/console.md), not part of the API document. */
const NOT_API = '/console';

/**
 * Starts recording every route registered on `app` (call right after creating it, before any
 * route). HEAD routes Fastify adds for each GET, and the console's pages, are left out.
 */
export function recordRoutes(app: FastifyInstance): void {
  const table: RouteEntry[] = [];
  tables.set(app, table);
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    if (route.url === NOT_API || route.url.startsWith(`${NOT_API}/`)) return;
    for (const method of methods) {
      if (method === 'HEAD') continue;
      table.push({ method, url: route.url });
    }
  });
}

/** The routes recorded on `app` by {@link recordRoutes}. */
export function routeTable(app: FastifyInstance): readonly RouteEntry[] {
  return tables.get(app) ?? [];
}

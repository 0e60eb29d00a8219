import type { FastifyInstance } from 'fastify';

/** One registered route, as the OpenAPI check compares it with docs/openapi.yaml. */
export interface RouteEntry {
  method: string;
  /** Fastify's URL with `:param` segments. */
  url: string;
}

const tables = new WeakMap<FastifyInstance, RouteEntry[]>();

/**
 * Starts recording every route registered on `app` (call right after creating it, before any
 * route). HEAD routes Fastify adds for each GET are left out.
 */
export function recordRoutes(app: FastifyInstance): void {
  const table: RouteEntry[] = [];
  tables.set(app, table);
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
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

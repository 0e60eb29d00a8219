import type { TLSSocket } from 'node:tls';
import { KeyferryError } from '@keyferry/core';
import { type Factory, toFactory } from '../factories/factories.ts';
import { compiledOnce } from '../storage/compiled-query.ts';
import type { Db } from '../storage/database.ts';

/**
 * The factory a connection is for, from its SNI host name `<sub>.device-link.<domain>`.
 * Without SNI, or with `localhost`/`device-link.<domain>` (IP addresses send no SNI), the one
 * factory is used when exactly one exists: local development needs no DNS.
 */
const factoryBySubdomain = compiledOnce((db, [sub]: [string]) =>
  db.selectFrom('factories').selectAll().where('subdomain', '=', sub),
);

/**
 * Factories found by subdomain, per database: factory rows are never updated or deleted, so a
 * row once found stays the answer for the process's life, and each new connection of a known
 * factory reads nothing. A subdomain not found is not kept: a factory created later (on this
 * node or another) is found by the next connection that names it.
 */
const factoriesBySubdomain = new WeakMap<Db, Map<string, Factory>>();

/**
 * The factory of a connection (its SNI cannot change on it), looked up on its first request and
 * kept for the others: factory rows are never updated or deleted, so the answer stays true for
 * the connection's life (at most the keep-alive timeout) — only a factory created meanwhile
 * could change the no-SNI answer, and the next connection sees it.
 */
const connectionFactories = new WeakMap<TLSSocket, Factory>();

export async function factoryForConnection(db: Db, socket: TLSSocket, domain: string): Promise<Factory> {
  let factory = connectionFactories.get(socket);
  if (!factory) {
    const servername = typeof socket.servername === 'string' ? socket.servername : undefined;
    factory = await factoryForHost(db, servername, domain);
    connectionFactories.set(socket, factory);
  }
  return factory;
}

export async function factoryForHost(
  db: Db,
  servername: string | undefined,
  domain: string,
): Promise<Factory> {
  const host = (servername ?? '').toLowerCase().replace(/\.$/, '');
  const suffix = `.device-link.${domain}`;
  if (host.endsWith(suffix) && host.length > suffix.length) {
    const sub = host.slice(0, -suffix.length);
    let known = factoriesBySubdomain.get(db);
    if (!known) {
      known = new Map();
      factoriesBySubdomain.set(db, known);
    }
    const cached = known.get(sub);
    if (cached) return cached;
    const row = /^[a-z0-9]{1,63}$/.test(sub) ? (await factoryBySubdomain(db, sub)).rows[0] : undefined;
    if (!row) {
      throw new KeyferryError(
        'not_found',
        `no factory has the device-link host name ${host}; check EL2GO_HOSTNAME`,
      );
    }
    const factory = toFactory(row);
    known.set(sub, factory);
    return factory;
  }
  if (host === '' || host === 'localhost' || host === `device-link.${domain}`) {
    const rows = await db.selectFrom('factories').selectAll().limit(2).execute();
    if (rows.length === 1) return toFactory(rows[0]!);
    throw new KeyferryError(
      'not_found',
      `this service has ${rows.length} factories; connect with SNI <subdomain>${suffix} (see el2g status)`,
    );
  }
  throw new KeyferryError('not_found', `${host} is not a device-link host name of this service (*${suffix})`);
}

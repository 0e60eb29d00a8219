import { KeyferryError } from '@keyferry/core';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Factory } from '../../factories/factories.ts';
import type { Db } from '../../storage/database.ts';
import { loadLive } from './overview-page.ts';

/** How often an open overview gets the rate and the state counts again. */
export const LIVE_PUSH_MS = 2_000;
/** Open event streams a keyferryd serves at once (each costs two queries a push). */
export const MAX_EVENT_STREAMS = 50;

/**
 * The overview's Server-Sent Events: `event: live` with the provisioning-rate series and the
 * devices by state, at once and every {@link LIVE_PUSH_MS}. Streams end when the browser
 * leaves or keyferryd closes (preClose), so shutdown does not wait for open tabs.
 */
export class EventStreams {
  readonly #db: Db;
  readonly #open = new Set<() => void>();

  constructor(db: Db) {
    this.#db = db;
  }

  open(request: FastifyRequest, reply: FastifyReply, factory: Factory): void {
    if (this.#open.size >= MAX_EVENT_STREAMS) {
      throw new KeyferryError(
        'rate_limited',
        `${MAX_EVENT_STREAMS} console pages already follow live updates; close some and reload`,
      );
    }
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-content-type-options': 'nosniff',
    });
    let busy = false;
    const push = async () => {
      if (busy) return; // a slow database skips a beat rather than piling up queries
      busy = true;
      try {
        const live = await loadLive(this.#db, factory);
        res.write(`event: live\ndata: ${JSON.stringify(live)}\n\n`);
      } catch (err) {
        request.log.error({ err }, 'console live update failed');
        res.write('event: failed\ndata: {}\n\n');
      } finally {
        busy = false;
      }
    };
    const timer = setInterval(push, LIVE_PUSH_MS);
    const end = () => {
      clearInterval(timer);
      this.#open.delete(end);
      res.end();
    };
    this.#open.add(end);
    request.raw.on('close', end);
    void push();
  }

  closeAll(): void {
    for (const end of [...this.#open]) end();
  }
}

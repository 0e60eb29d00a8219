import type { ServerResponse } from 'node:http';
import { KeyferryError } from '@keyferry/core';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import type { Factory } from '../../factories/factories.ts';
import type { Db } from '../../storage/database.ts';
import { loadLive } from './overview-page.ts';

/** How often an open overview gets the rate and the state counts again. */
export const LIVE_PUSH_MS = 2_000;
/** Open event streams a keyferryd serves at once. */
export const MAX_EVENT_STREAMS = 50;

/** The open overviews of one factory, fed by one timer and one read a push. */
interface Feed {
  streams: Set<ServerResponse>;
  timer: NodeJS.Timeout;
  /** The last push's event, sent at once to an overview that opens in between. */
  last?: string;
}

/**
 * The overview's Server-Sent Events: `event: live` with the provisioning-rate series and the
 * devices by state, at once and every {@link LIVE_PUSH_MS}. The overviews of one factory share
 * each push: the figures are read once for all of them (two queries), so the console costs the
 * database the same with one open page as with fifty. Streams end when the browser leaves or
 * keyferryd closes (preClose), so shutdown does not wait for open tabs.
 */
export class EventStreams {
  readonly #db: Db;
  readonly #log: FastifyBaseLogger;
  readonly #load: typeof loadLive;
  readonly #feeds = new Map<number, Feed>();
  readonly #open = new Set<() => void>();

  /** `log` gets a failed push: the push is the factory's, not one page's request. */
  constructor(db: Db, log: FastifyBaseLogger, load: typeof loadLive = loadLive) {
    this.#db = db;
    this.#log = log;
    this.#load = load;
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
    let feed = this.#feeds.get(factory.id);
    if (feed) {
      if (feed.last) res.write(feed.last);
    } else {
      feed = this.#feed(factory);
    }
    feed.streams.add(res);
    const joined = feed;
    const end = () => {
      if (!this.#open.delete(end)) return;
      joined.streams.delete(res);
      if (joined.streams.size === 0) {
        clearInterval(joined.timer);
        this.#feeds.delete(factory.id);
      }
      res.end();
    };
    this.#open.add(end);
    request.raw.on('close', end);
  }

  /** A factory's feed, pushing at once and then every LIVE_PUSH_MS to every stream it holds. */
  #feed(factory: Factory): Feed {
    let busy = false;
    const push = async () => {
      if (busy) return; // a slow database skips a beat rather than piling up queries
      busy = true;
      let event: string;
      try {
        event = `event: live\ndata: ${JSON.stringify(await this.#load(this.#db, factory))}\n\n`;
        feed.last = event;
      } catch (err) {
        this.#log.error({ err, factory: factory.name }, 'console live update failed');
        event = 'event: failed\ndata: {}\n\n';
      } finally {
        busy = false;
      }
      for (const res of feed.streams) res.write(event);
    };
    const feed: Feed = { streams: new Set(), timer: setInterval(push, LIVE_PUSH_MS) };
    this.#feeds.set(factory.id, feed);
    void push();
    return feed;
  }

  closeAll(): void {
    for (const end of [...this.#open]) end();
  }
}

import type { ServerResponse } from 'node:http';
import { KeyferryError } from '@keyferry/core';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import type { Factory } from '../../factories/factories.ts';
import type { Db } from '../../storage/database.ts';
import { principalOfTokenId } from '../../tokens/api-tokens.ts';
import { loadLive } from './overview-page.ts';
import type { ConsoleSession, ConsoleSessions } from './sessions.ts';

/** How often an open overview gets the rate and the state counts again. */
export const LIVE_PUSH_MS = 2_000;
/** Open event streams a keyferryd serves at once. */
export const MAX_EVENT_STREAMS = 50;
/**
 * Bytes a stream may hold unsent (a push is ~0.5 KB): a page that stopped reading past this is
 * cut off rather than buffered without end; EventSource reconnects when it reads again.
 */
export const MAX_STREAM_BUFFER_BYTES = 16 * 1024;

/**
 * Of `tokenIds`, the ones still valid for `factoryId` (not revoked, not expired): one read per
 * token, each push round.
 */
export type LiveTokens = (db: Db, factoryId: number, tokenIds: string[]) => Promise<Set<string>>;

async function liveTokens(db: Db, factoryId: number, tokenIds: string[]): Promise<Set<string>> {
  const principals = await Promise.all(tokenIds.map((id) => principalOfTokenId(db, id)));
  return new Set(principals.filter((p) => p?.factoryId === factoryId).map((p) => p!.tokenId));
}

/** One open overview: the session it was opened with and how it ends. */
interface Stream {
  sessionId: string;
  session: ConsoleSession;
  end: (stalled?: boolean) => void;
}

/** The open overviews of one factory, fed by one timer and one read a push. */
interface Feed {
  streams: Map<ServerResponse, Stream>;
  timer: NodeJS.Timeout;
  push: () => Promise<void>;
  /** The last push's event, sent at once to an overview that opens in between. */
  last?: string;
}

/**
 * The overview's Server-Sent Events: `event: live` with the provisioning-rate series and the
 * devices by state, at once and every {@link LIVE_PUSH_MS}. The overviews of one factory share
 * each push: the figures are read once for all of them (two queries), so the console costs the
 * database the same with one open page as with fifty. Each push first re-checks every stream's
 * session (in memory) and its token (one read per distinct token): a stream whose session was
 * signed out, expired, or whose token was revoked or expired ends there, and signing out ends
 * the session's streams at once. Streams end when the browser leaves or keyferryd closes
 * (preClose), so shutdown does not wait for open tabs.
 */
export class EventStreams {
  readonly #db: Db;
  readonly #log: FastifyBaseLogger;
  readonly #sessions: ConsoleSessions;
  readonly #load: typeof loadLive;
  readonly #liveTokens: LiveTokens;
  readonly #feeds = new Map<number, Feed>();
  /** Every open stream's end, and the session it belongs to. */
  readonly #open = new Map<(stalled?: boolean) => void, string>();

  /** `log` gets a failed push: the push is the factory's, not one page's request. */
  constructor(
    db: Db,
    log: FastifyBaseLogger,
    sessions: ConsoleSessions,
    options: { load?: typeof loadLive; liveTokens?: LiveTokens } = {},
  ) {
    this.#db = db;
    this.#log = log;
    this.#sessions = sessions;
    this.#load = options.load ?? loadLive;
    this.#liveTokens = options.liveTokens ?? liveTokens;
    sessions.onEnd((id) => {
      for (const [end, sessionId] of [...this.#open]) if (sessionId === id) end();
    });
  }

  /** Opens the stream of a request already signed in with session `sessionId`. */
  open(request: FastifyRequest, reply: FastifyReply, factory: Factory, sessionId: string): void {
    const session = this.#sessions.find(sessionId);
    if (!session) {
      throw new KeyferryError('unauthenticated', 'the console session ended: sign in again');
    }
    if (this.#open.size >= MAX_EVENT_STREAMS) this.#makeRoomFor(factory);
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-content-type-options': 'nosniff',
    });
    const existing = this.#feeds.get(factory.id);
    if (existing?.last) res.write(existing.last);
    const joined = existing ?? this.#feed(factory);
    const end = (stalled = false) => {
      if (!this.#open.delete(end)) return;
      joined.streams.delete(res);
      if (joined.streams.size === 0) {
        clearInterval(joined.timer);
        this.#feeds.delete(factory.id);
      }
      // a page that stopped reading would never take what end() adds to its buffer
      if (stalled) res.destroy();
      else res.end();
    };
    joined.streams.set(res, { sessionId, session, end });
    this.#open.set(end, sessionId);
    request.raw.on('close', () => end());
    if (!existing) void joined.push(); // the first push, once this stream is in the feed
  }

  /**
   * At MAX_EVENT_STREAMS, a page of `factory` takes the place of the oldest page of the factory
   * that follows with the most pages, when that one has at least two more than `factory`: one
   * factory's pages cannot keep every other factory's from following (its page that gave way is
   * refused when it reconnects). Otherwise the page is refused.
   */
  #makeRoomFor(factory: Factory): void {
    const own = this.#feeds.get(factory.id)?.streams.size ?? 0;
    let largest: Feed | undefined;
    for (const feed of this.#feeds.values()) {
      if (!largest || feed.streams.size > largest.streams.size) largest = feed;
    }
    const oldest =
      largest && largest.streams.size >= own + 2 ? largest.streams.values().next().value : undefined;
    if (!oldest) {
      throw new KeyferryError(
        'rate_limited',
        `${MAX_EVENT_STREAMS} console pages already follow live updates; close some and reload`,
      );
    }
    oldest.end();
  }

  /**
   * Ends the streams whose session or token is no longer valid; true when some remain. Throws
   * when the tokens cannot be read (the push then sends nothing of the factory).
   */
  async #recheck(feed: Feed, factory: Factory): Promise<boolean> {
    for (const stream of [...feed.streams.values()]) {
      if (this.#sessions.find(stream.sessionId) !== stream.session) stream.end();
    }
    if (feed.streams.size === 0) return false;
    const tokenIds = [...new Set([...feed.streams.values()].map((s) => s.session.tokenId))];
    const live = await this.#liveTokens(this.#db, factory.id, tokenIds);
    // a stream that opened during the read was checked by its own request
    for (const stream of [...feed.streams.values()]) {
      const { tokenId } = stream.session;
      if (tokenIds.includes(tokenId) && !live.has(tokenId)) this.#sessions.end(stream.sessionId); // ends its streams
    }
    return feed.streams.size > 0;
  }

  /** A factory's feed, pushing every LIVE_PUSH_MS to every stream it holds (the opener pushes first). */
  #feed(factory: Factory): Feed {
    let busy = false;
    const push = async () => {
      if (busy) return; // a slow database skips a beat rather than piling up queries
      busy = true;
      let event: string;
      try {
        if (!(await this.#recheck(feed, factory))) return;
        event = `event: live\ndata: ${JSON.stringify(await this.#load(this.#db, factory))}\n\n`;
        feed.last = event;
      } catch (err) {
        this.#log.error({ err, factory: factory.name }, 'console live update failed');
        event = 'event: failed\ndata: {}\n\n';
      } finally {
        busy = false;
      }
      for (const [res, stream] of [...feed.streams]) {
        if (res.writableLength > MAX_STREAM_BUFFER_BYTES) stream.end(true);
        else res.write(event);
      }
    };
    const feed: Feed = { streams: new Map(), timer: setInterval(push, LIVE_PUSH_MS), push };
    this.#feeds.set(factory.id, feed);
    return feed;
  }

  closeAll(): void {
    for (const end of [...this.#open.keys()]) end();
  }
}

import { EventEmitter } from 'node:events';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Factory } from '../../src/factories/factories.ts';
import {
  EventStreams,
  LIVE_PUSH_MS,
  type LiveTokens,
  MAX_EVENT_STREAMS,
} from '../../src/http/console/event-streams.ts';
import type { loadLive } from '../../src/http/console/overview-page.ts';
import { ConsoleSessions, SESSION_LIFETIME_MS } from '../../src/http/console/sessions.ts';
import type { Db } from '../../src/storage/database.ts';

/*
 * The streams' sharing, with the HTTP layer reduced to what EventStreams touches (the response's
 * writes, the request's close): the browser test (console-browser.test.ts) follows a real stream.
 */

/**
 * One browser tab: its request, its reply, and the events written to it. A `stalled` tab stops
 * reading: its writes stay buffered (writableLength grows, write answers false).
 */
function tab(stalled = false) {
  const raw = new EventEmitter();
  const events: string[] = [];
  const res = {
    ended: false,
    destroyed: false,
    writableLength: 0,
    writeHead: () => res,
    write: (chunk: string) => {
      events.push(chunk);
      if (stalled) res.writableLength += Buffer.byteLength(chunk);
      return !stalled;
    },
    end: () => {
      res.ended = true;
    },
    destroy: () => {
      res.destroyed = true;
      res.writableLength = 0;
    },
  };
  const request = { raw } as unknown as FastifyRequest;
  const reply = { hijack: () => {}, raw: res } as unknown as FastifyReply;
  return { request, reply, events, res, close: () => raw.emit('close') };
}

const factory = (id: number) => ({ id, name: `f${id}` }) as Factory;

describe('the console overviews of a factory share each live push', () => {
  let reads: number[];
  let failing: boolean;
  let logged: unknown[];
  let streams: EventStreams;
  let sessions: ConsoleSessions;
  let revoked: Set<string>;
  let tokenReads: string[][];
  let opened = 0;
  /** Opens tab `t` on factory `f`, signed in with a session of its own (token `tokenId`). */
  const open = (t: ReturnType<typeof tab>, f: number, tokenId = `t${opened++}`) => {
    const { id } = sessions.create({ tokenId, factoryId: f });
    streams.open(t.request, t.reply, factory(f), id);
    return id;
  };
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'Date'] });
    reads = [];
    revoked = new Set();
    tokenReads = [];
    failing = false;
    logged = [];
    const load = (async (_db: Db, f: Factory) => {
      reads.push(f.id);
      if (failing) throw new Error('database gone');
      return { rate: { from: 'x', perMinute: [reads.length] }, states: {} };
    }) as unknown as typeof loadLive;
    const log = { error: (obj: unknown) => logged.push(obj) } as unknown as FastifyBaseLogger;
    const liveTokens: LiveTokens = async (_db, _factoryId, ids) => {
      tokenReads.push(ids);
      return new Set(ids.filter((id) => !revoked.has(id)));
    };
    sessions = new ConsoleSessions();
    streams = new EventStreams({} as Db, log, sessions, { load, liveTokens });
  });
  afterEach(() => {
    streams.closeAll();
    vi.useRealTimers();
  });

  it('reads the figures once a push for all of a factory’s open pages, and sends each the same event', async () => {
    const tabs = [tab(), tab(), tab()];
    open(tabs[0]!, 1);
    await vi.waitFor(() => expect(tabs[0]!.events).toHaveLength(1));
    // pages opened later get the last event at once, without a read of their own
    open(tabs[1]!, 1);
    open(tabs[2]!, 1);
    expect(tabs[1]!.events).toEqual(tabs[0]!.events);
    expect(reads).toEqual([1]);
    await vi.advanceTimersByTimeAsync(LIVE_PUSH_MS * 3);
    expect(reads).toEqual([1, 1, 1, 1]);
    for (const t of tabs)
      expect(t.events.at(-1)).toBe(
        'event: live\ndata: {"rate":{"from":"x","perMinute":[4]},"states":{}}\n\n',
      );
    expect(tabs[2]!.events).toHaveLength(4);
  });

  it('feeds each factory on its own, and stops reading when its last page closes', async () => {
    const a1 = tab();
    const a2 = tab();
    const b = tab();
    open(a1, 1);
    open(a2, 1);
    open(b, 2);
    await vi.advanceTimersByTimeAsync(LIVE_PUSH_MS);
    expect(reads.sort()).toEqual([1, 1, 2, 2]);
    a1.close();
    expect(a1.res.ended).toBe(true);
    reads = [];
    await vi.advanceTimersByTimeAsync(LIVE_PUSH_MS);
    expect(reads.sort()).toEqual([1, 2]);
    a2.close();
    b.close();
    reads = [];
    await vi.advanceTimersByTimeAsync(LIVE_PUSH_MS * 3);
    expect(reads).toEqual([]);
    // a page opened afterwards starts a feed again, with a read of its own
    const again = tab();
    open(again, 1);
    await vi.waitFor(() => expect(again.events).toHaveLength(1));
    expect(reads).toEqual([1]);
  });

  it('tells every page of the factory when a push fails, and logs it once', async () => {
    const tabs = [tab(), tab()];
    open(tabs[0]!, 1);
    open(tabs[1]!, 1);
    await vi.waitFor(() => expect(tabs[0]!.events).toHaveLength(1));
    failing = true;
    await vi.advanceTimersByTimeAsync(LIVE_PUSH_MS);
    for (const t of tabs) expect(t.events.at(-1)).toBe('event: failed\ndata: {}\n\n');
    expect(logged).toHaveLength(1);
  });

  it(`refuses the page past ${MAX_EVENT_STREAMS} open ones when the factories share them evenly`, () => {
    // 17 + 17 + 16: no factory follows with two pages more than the one asking
    for (let i = 0; i < MAX_EVENT_STREAMS; i++) {
      const t = tab();
      open(t, 1 + (i % 3));
    }
    const over = tab();
    expect(() => open(over, 3)).toThrow(/50 console pages already follow/);
    expect(over.events).toEqual([]);
  });

  it(`past ${MAX_EVENT_STREAMS}, one factory's oldest page gives way to another factory's, never the reverse`, () => {
    const hog = Array.from({ length: MAX_EVENT_STREAMS }, () => tab());
    for (const t of hog) open(t, 1);
    const other = tab();
    open(other, 2);
    expect(other.res.ended).toBe(false);
    // the first of factory 1's pages ended; the others follow on
    expect(hog.map((t) => t.res.ended)).toEqual([true, ...Array(MAX_EVENT_STREAMS - 1).fill(false)]);
    // that page reconnecting does not push factory 2's out: 49 against 1 is factory 1's share
    expect(() => open(tab(), 1)).toThrow(/50 console pages already follow/);
    expect(other.res.ended).toBe(false);
  });

  it('ends a signed-out session’s streams at once, and no push reaches them afterwards', async () => {
    const mine = [tab(), tab()];
    const other = tab();
    const id = open(mine[0]!, 1, 'a');
    streams.open(mine[1]!.request, mine[1]!.reply, factory(1), id); // a second tab, same session
    open(other, 1, 'b');
    await vi.waitFor(() => expect(mine[0]!.events).toHaveLength(1));
    sessions.end(id); // what POST /console/sign-out does
    for (const t of mine) expect(t.res.ended).toBe(true);
    const sent = mine.map((t) => t.events.length);
    await vi.advanceTimersByTimeAsync(LIVE_PUSH_MS * 3);
    expect(mine.map((t) => t.events.length)).toEqual(sent);
    expect(other.res.ended).toBe(false);
    expect(other.events.length).toBeGreaterThan(1);
  });

  it('ends a stream at the next push once its token is revoked or expired, reading each token once a push', async () => {
    const tabs = [tab(), tab(), tab()];
    open(tabs[0]!, 1, 'revoked');
    open(tabs[1]!, 1, 'revoked');
    open(tabs[2]!, 1, 'kept');
    await vi.waitFor(() => expect(tabs[2]!.events).toHaveLength(1));
    tokenReads = [];
    await vi.advanceTimersByTimeAsync(LIVE_PUSH_MS);
    // one read per distinct token per push, for the whole factory
    expect(tokenReads.map((ids) => ids.sort())).toEqual([['kept', 'revoked']]);
    const before = tabs[0]!.events.length;
    revoked.add('revoked'); // revoked or expired: the token read no longer answers it
    tokenReads = [];
    await vi.advanceTimersByTimeAsync(LIVE_PUSH_MS);
    expect(tabs[0]!.res.ended).toBe(true);
    expect(tabs[1]!.res.ended).toBe(true);
    expect(tabs[0]!.events).toHaveLength(before); // the push that found it revoked sent it nothing
    expect(tabs[2]!.res.ended).toBe(false);
    await vi.advanceTimersByTimeAsync(LIVE_PUSH_MS);
    expect(tokenReads.at(-1)).toEqual(['kept']);
    expect(tabs[2]!.events.length).toBe(before + 2);
  });

  it('ends a stream at the first push past its session’s lifetime', async () => {
    const t = tab();
    open(t, 1);
    await vi.waitFor(() => expect(t.events).toHaveLength(1));
    await vi.advanceTimersByTimeAsync(SESSION_LIFETIME_MS - LIVE_PUSH_MS);
    expect(t.res.ended).toBe(false);
    const sent = t.events.length;
    await vi.advanceTimersByTimeAsync(LIVE_PUSH_MS);
    expect(t.res.ended).toBe(true);
    expect(t.events).toHaveLength(sent);
  });

  it('cuts off a page that stops reading instead of buffering every push', async () => {
    const stalled = tab(true);
    const reading = tab();
    open(stalled, 1);
    open(reading, 1);
    await vi.advanceTimersByTimeAsync(LIVE_PUSH_MS * 1800); // an hour of pushes
    expect(stalled.res.writableLength).toBeLessThan(64 * 1024);
    expect(stalled.res.destroyed).toBe(true);
    expect(reading.res.ended).toBe(false);
    expect(reading.events).toHaveLength(1801);
  });
});

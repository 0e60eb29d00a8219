import { EventEmitter } from 'node:events';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Factory } from '../../src/factories/factories.ts';
import { EventStreams, LIVE_PUSH_MS, MAX_EVENT_STREAMS } from '../../src/http/console/event-streams.ts';
import type { loadLive } from '../../src/http/console/overview-page.ts';
import type { Db } from '../../src/storage/database.ts';

/*
 * The streams' sharing, with the HTTP layer reduced to what EventStreams touches (the response's
 * writes, the request's close): the browser test (console-browser.test.ts) follows a real stream.
 */

/** One browser tab: its request, its reply, and the events written to it. */
function tab() {
  const raw = new EventEmitter();
  const events: string[] = [];
  const res = {
    ended: false,
    writeHead: () => res,
    write: (chunk: string) => events.push(chunk) > 0,
    end: () => {
      res.ended = true;
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
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    reads = [];
    failing = false;
    logged = [];
    const load = (async (_db: Db, f: Factory) => {
      reads.push(f.id);
      if (failing) throw new Error('database gone');
      return { rate: { from: 'x', perMinute: [reads.length] }, states: {} };
    }) as unknown as typeof loadLive;
    const log = { error: (obj: unknown) => logged.push(obj) } as unknown as FastifyBaseLogger;
    streams = new EventStreams({} as Db, log, load);
  });
  afterEach(() => {
    streams.closeAll();
    vi.useRealTimers();
  });

  it('reads the figures once a push for all of a factory’s open pages, and sends each the same event', async () => {
    const tabs = [tab(), tab(), tab()];
    streams.open(tabs[0]!.request, tabs[0]!.reply, factory(1));
    await vi.waitFor(() => expect(tabs[0]!.events).toHaveLength(1));
    // pages opened later get the last event at once, without a read of their own
    streams.open(tabs[1]!.request, tabs[1]!.reply, factory(1));
    streams.open(tabs[2]!.request, tabs[2]!.reply, factory(1));
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
    streams.open(a1.request, a1.reply, factory(1));
    streams.open(a2.request, a2.reply, factory(1));
    streams.open(b.request, b.reply, factory(2));
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
    streams.open(again.request, again.reply, factory(1));
    await vi.waitFor(() => expect(again.events).toHaveLength(1));
    expect(reads).toEqual([1]);
  });

  it('tells every page of the factory when a push fails, and logs it once', async () => {
    const tabs = [tab(), tab()];
    streams.open(tabs[0]!.request, tabs[0]!.reply, factory(1));
    streams.open(tabs[1]!.request, tabs[1]!.reply, factory(1));
    await vi.waitFor(() => expect(tabs[0]!.events).toHaveLength(1));
    failing = true;
    await vi.advanceTimersByTimeAsync(LIVE_PUSH_MS);
    for (const t of tabs) expect(t.events.at(-1)).toBe('event: failed\ndata: {}\n\n');
    expect(logged).toHaveLength(1);
  });

  it(`refuses the page past ${MAX_EVENT_STREAMS} open ones, whatever their factories`, () => {
    for (let i = 0; i < MAX_EVENT_STREAMS; i++) {
      const t = tab();
      streams.open(t.request, t.reply, factory(1 + (i % 3)));
    }
    const over = tab();
    expect(() => streams.open(over.request, over.reply, factory(9))).toThrow(
      /50 console pages already follow/,
    );
  });
});

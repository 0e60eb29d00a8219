import { setTimeout as delay } from 'node:timers/promises';
import { AgentError } from '../agent-error.ts';
import type { Log } from '../log.ts';

/**
 * The longest wait between two attempts or checks, whatever DAEMON_INTERVAL or a Retry-After
 * says: a day. A Retry-After of weeks would also overflow setTimeout, which then fires at once.
 */
export const MAX_WAIT_SECONDS = 86_400;

/**
 * Waits `ms`, or less if `signal` is aborted meanwhile (the daemon's SIGTERM); never rejects:
 * the caller looks at the signal.
 */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return delay(ms, undefined, signal ? { signal } : {}).catch(() => undefined);
}

/**
 * Runs `attempt` until it succeeds or fails for good. Transient failures (network, 5xx, 429),
 * a device not allow-listed yet and plan limits ({@link AgentError.retriedByDaemon}) are
 * retried every `intervalSeconds` — or after the service's Retry-After, when longer, up to
 * {@link MAX_WAIT_SECONDS} — with one log line each; with `once` the failure is returned to the
 * caller. Once `signal` is aborted no attempt follows: a wait ends at once and the failure that
 * began it is thrown.
 */
export async function retryTransient<T>(options: {
  readonly attempt: () => Promise<T>;
  readonly intervalSeconds: number;
  readonly once: boolean;
  readonly log: Log;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly signal?: AbortSignal;
}): Promise<T> {
  const sleep = options.sleep ?? ((ms) => pause(ms, options.signal));
  for (;;) {
    try {
      return await options.attempt();
    } catch (error) {
      if (!(error instanceof AgentError) || !error.retriedByDaemon || options.once) throw error;
      if (options.signal?.aborted) throw error;
      const wait = Math.min(MAX_WAIT_SECONDS, Math.max(options.intervalSeconds, error.retryAfter ?? 0));
      options.log.warn(`${error.message}; retrying in ${wait} s`);
      await sleep(wait * 1000);
      if (options.signal?.aborted) throw error;
    }
  }
}

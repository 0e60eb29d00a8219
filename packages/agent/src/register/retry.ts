import { AgentError } from '../agent-error.ts';
import type { Log } from '../log.ts';

/**
 * Runs `attempt` until it succeeds or fails for good. Transient failures (network, 5xx, 429),
 * a device not allow-listed yet and plan limits ({@link AgentError.retriedByDaemon}) are
 * retried every `intervalSeconds` — or after the service's Retry-After, when longer — with one
 * log line each; with `once` the failure is returned to the caller.
 */
export async function retryTransient<T>(options: {
  readonly attempt: () => Promise<T>;
  readonly intervalSeconds: number;
  readonly once: boolean;
  readonly log: Log;
  readonly sleep?: (ms: number) => Promise<void>;
}): Promise<T> {
  const sleep = options.sleep ?? ((ms) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  for (;;) {
    try {
      return await options.attempt();
    } catch (error) {
      if (!(error instanceof AgentError) || !error.retriedByDaemon || options.once) throw error;
      const wait = Math.max(options.intervalSeconds, error.retryAfter ?? 0);
      options.log.warn(`${error.message}; retrying in ${wait} s`);
      await sleep(wait * 1000);
    }
  }
}

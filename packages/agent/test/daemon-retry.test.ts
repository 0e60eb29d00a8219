import { describe, expect, it } from 'vitest';
import { AgentError, type AgentErrorKind } from '../src/agent-error.ts';
import { MAX_WAIT_SECONDS, retryTransient } from '../src/register/retry.ts';

/** An attempt that fails with `kinds` in turn, then succeeds; the log and the waits it caused. */
function scripted(kinds: readonly AgentErrorKind[], once: boolean) {
  const warnings: string[] = [];
  const waits: number[] = [];
  let calls = 0;
  const run = retryTransient({
    attempt: async () => {
      const kind = kinds[calls++];
      if (kind !== undefined) throw new AgentError(kind, `failure ${calls} (${kind})`);
      return 'provisioned';
    },
    intervalSeconds: 300,
    once,
    log: { info: () => {}, warn: (line) => warnings.push(line) },
    sleep: async (ms) => {
      waits.push(ms);
    },
  });
  return { run, warnings, waits, calls: () => calls };
}

describe('auto-register waits in its own process (the unit has no Restart=)', () => {
  it('a device not allow-listed yet, a plan limit and the network are tried again every DAEMON_INTERVAL', async () => {
    const s = scripted(['not_allowlisted', 'not_allowlisted', 'plan_limit', 'transient'], false);
    await expect(s.run).resolves.toBe('provisioned');
    expect(s.waits).toEqual([300_000, 300_000, 300_000, 300_000]);
    expect(s.warnings).toEqual([
      'failure 1 (not_allowlisted); retrying in 300 s',
      'failure 2 (not_allowlisted); retrying in 300 s',
      'failure 3 (plan_limit); retrying in 300 s',
      'failure 4 (transient); retrying in 300 s',
    ]);
  });

  it.each(['refused', 'se_foreign_key', 'setting_invalid', 'server_untrusted'] as const)(
    'what needs a change on the device or a refusal a retry repeats (%s) ends it at once',
    async (kind) => {
      const s = scripted([kind], false);
      await expect(s.run).rejects.toMatchObject({ kind });
      expect(s.calls()).toBe(1);
      expect(s.waits).toEqual([]);
    },
  );

  it.each(['not_allowlisted', 'plan_limit', 'transient'] as const)(
    'with --once, %s is returned after one attempt (its own exit code)',
    async (kind) => {
      const s = scripted([kind], true);
      await expect(s.run).rejects.toMatchObject({ kind });
      expect(s.calls()).toBe(1);
      expect(s.waits).toEqual([]);
    },
  );
});

describe('how long it waits, and stopping', () => {
  const quiet = { info: () => {}, warn: () => {} };

  it('waits for a Retry-After longer than DAEMON_INTERVAL, but never more than a day', async () => {
    const waits: number[] = [];
    const warnings: string[] = [];
    let calls = 0;
    const result = await retryTransient({
      attempt: async () => {
        calls++;
        // 25 days: past what setTimeout holds, which would fire at once and retry in a tight loop
        if (calls === 1) throw new AgentError('transient', 'busy', { retryAfter: 2_200_000 });
        if (calls === 2) throw new AgentError('transient', 'busy', { retryAfter: 900 });
        return 'done';
      },
      intervalSeconds: 300,
      once: false,
      log: { info: () => {}, warn: (line) => warnings.push(line) },
      sleep: async (ms) => {
        waits.push(ms);
      },
    });
    expect(result).toBe('done');
    expect(waits).toEqual([MAX_WAIT_SECONDS * 1000, 900_000]);
    expect(warnings).toEqual(['busy; retrying in 86400 s', 'busy; retrying in 900 s']);
  });

  it('an abort ends its wait at once and throws the failure it was waiting out, with no attempt after it', async () => {
    const stopping = new AbortController();
    let calls = 0;
    const run = retryTransient({
      attempt: async () => {
        calls++;
        throw new AgentError('transient', 'network down');
      },
      intervalSeconds: 300,
      once: false,
      // the wait is the real one: 300 s unless the abort ends it
      log: { info: () => {}, warn: () => stopping.abort() },
      signal: stopping.signal,
    });
    await expect(run).rejects.toMatchObject({ kind: 'transient', message: 'network down' });
    expect(calls).toBe(1);
  });

  it('an abort before a failure is waited out throws it without waiting', async () => {
    const stopping = new AbortController();
    stopping.abort();
    const waits: number[] = [];
    await expect(
      retryTransient({
        attempt: async () => {
          throw new AgentError('not_allowlisted', 'not yet');
        },
        intervalSeconds: 300,
        once: false,
        log: quiet,
        sleep: async (ms) => {
          waits.push(ms);
        },
        signal: stopping.signal,
      }),
    ).rejects.toMatchObject({ kind: 'not_allowlisted' });
    expect(waits).toEqual([]);
  });
});

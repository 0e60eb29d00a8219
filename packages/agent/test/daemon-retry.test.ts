import { describe, expect, it } from 'vitest';
import { AgentError, type AgentErrorKind } from '../src/agent-error.ts';
import { retryTransient } from '../src/register/retry.ts';

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

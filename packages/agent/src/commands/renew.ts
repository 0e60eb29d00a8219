import type { Command } from 'commander';
import { AgentError } from '../agent-error.ts';
import { consoleLog } from '../log.ts';
import { MAX_WAIT_SECONDS, pause, retryTransient } from '../register/retry.ts';
import { agentSettings, settingSource } from '../settings/settings.ts';

/**
 * `keyferry-agent renew` (one run, for keyferry-agent-renew.timer) and `keyferry-agent daemon`
 * (long-running): renew the device gateway certificate with a new key in the other slot.
 */
export function registerRenew(program: Command): void {
  program
    .command('renew')
    .description(
      'renew the device gateway certificate when inside its renewal window or when the service asks for a rotation: new key in the free slot, switch sota.toml, report, delete the old key',
    )
    .option('--env-file <file>', 'settings file (default /etc/default/lmp-el2go-auto-register)')
    .option('--force', 'rotate now, even outside the renewal window')
    .option(
      '--once',
      'one attempt: exit 75 on a transient failure instead of retrying every DAEMON_INTERVAL (or after Retry-After)',
    )
    .action(async (options: { envFile?: string; force?: boolean; once?: boolean }) => {
      await withSe(options.envFile, async ({ settings, se, log, renewOnce }) => {
        const summary = await retryTransient({
          attempt: () => renewOnce({ settings, se, log, force: options.force === true }),
          intervalSeconds: settings.daemonInterval,
          once: options.once === true,
          log,
        });
        log.info(
          summary.rotated ? 'Rotation complete' : 'Nothing to do: the certificate is not due for renewal',
        );
      });
    });
  program
    .command('daemon')
    .description(
      'keep the device gateway certificate renewed: check every DAEMON_INTERVAL seconds (sooner when renewal is due), renew inside the window with jitter, honour Retry-After',
    )
    .option('--env-file <file>', 'settings file (default /etc/default/lmp-el2go-auto-register)')
    .action(async (options: { envFile?: string }) => {
      await withSe(options.envFile, async ({ settings, se, log, renewOnce }) => {
        // One jitter per device run: where in the first half of the window this device renews.
        const jitter = Math.random();
        // SIGTERM (systemctl stop) or SIGINT: a check in progress ends, a wait at once
        const stopping = new AbortController();
        const end = () => stopping.abort();
        process.once('SIGTERM', end);
        process.once('SIGINT', end);
        while (!stopping.signal.aborted) {
          let summary: Awaited<ReturnType<typeof renewOnce>>;
          try {
            summary = await retryTransient({
              attempt: () => renewOnce({ settings, se, log, jitter }),
              intervalSeconds: settings.daemonInterval,
              once: false,
              log,
              signal: stopping.signal,
            });
          } catch (error) {
            // stopped while waiting out a failure the next check would have tried again
            if (stopping.signal.aborted && error instanceof AgentError && error.retriedByDaemon) break;
            throw error;
          }
          if (summary.rotated) log.info('Rotation complete');
          const untilDue =
            summary.dueAt === undefined
              ? Number.POSITIVE_INFINITY
              : (summary.dueAt.getTime() - Date.now()) / 1000;
          const seconds = Math.min(settings.daemonInterval, MAX_WAIT_SECONDS, Math.max(1, untilDue));
          await pause(seconds * 1000, stopping.signal);
        }
      });
    });
}

async function withSe(
  envFile: string | undefined,
  run: (deps: {
    settings: ReturnType<typeof agentSettings>;
    se: import('../se/port.ts').SecureElement;
    log: typeof consoleLog;
    renewOnce: typeof import('../rotate/rotate.ts').renewOnce;
  }) => Promise<void>,
): Promise<void> {
  // loaded when the command runs: PKCS#11 and X.509 would slow every --help
  const { renewOnce } = await import('../rotate/rotate.ts');
  const { openSecureElement } = await import('../se/open.ts');
  const log = consoleLog;
  const settings = agentSettings(settingSource(envFile, process.env, false));
  const se = openSecureElement(settings, { log });
  try {
    log.info(`Secure element: ${se.description}`);
    await run({ settings, se, log, renewOnce });
  } finally {
    se.close();
  }
}

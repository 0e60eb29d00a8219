import type { Command } from 'commander';
import { startAktualizrLite } from '../aklite.ts';
import { consoleLog } from '../log.ts';
import { retryTransient } from '../register/retry.ts';
import { agentSettings, settingSource } from '../settings/settings.ts';

/** `keyferry-agent auto-register`: the boot-time provisioning run (DESIGN.md §8). */
export function registerAutoRegister(program: Command): void {
  program
    .command('auto-register')
    .description(
      'provision the key pairs and certificates the factory assigns, write sota.toml, start aktualizr-lite',
    )
    .option('--env-file <file>', 'settings file (default /etc/default/lmp-el2go-auto-register)')
    .option('--once', 'do not retry transient failures; exit 75 instead')
    .action(async (options: { envFile?: string; once?: boolean }) => {
      // loaded when the command runs: PKCS#11 and X.509 would slow every --help
      const { readCertificateFile, registerOnce } = await import('../register/auto-register.ts');
      const { openSecureElement } = await import('../se/open.ts');
      const log = consoleLog;
      const settings = agentSettings(settingSource(options.envFile, process.env, true));
      readCertificateFile(settings.rootCrt, 'ROOT_CRT');
      const se = openSecureElement(settings);
      try {
        log.info(`Secure element: ${se.description}`);
        const summary = await retryTransient({
          attempt: () => registerOnce({ settings, se, log }),
          intervalSeconds: settings.daemonInterval,
          once: options.once === true,
          log,
        });
        log.info(
          summary.changed
            ? 'Provisioning complete'
            : 'Nothing to do: every assigned key pair and certificate was already in the secure element',
        );
      } finally {
        se.close();
      }
      log.info(`Starting aktualizr-lite: ${settings.akliteStartCmd}`);
      startAktualizrLite(settings.akliteStartCmd);
    });
}

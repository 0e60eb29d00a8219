import type { Command } from 'commander';
import { startAktualizrLite } from '../aklite.ts';
import { consoleLog } from '../log.ts';
import { retryTransient } from '../register/retry.ts';
import { agentSettings, settingSource } from '../settings/settings.ts';

/** `keyferry-agent auto-register`: the boot-time provisioning run, in place of lmp-el2go-auto-register. */
export function registerAutoRegister(program: Command): void {
  program
    .command('auto-register')
    .description(
      'provision the key pairs and certificates the factory assigns, write sota.toml, start aktualizr-lite',
    )
    .option('--env-file <file>', 'settings file (default /etc/default/lmp-el2go-auto-register)')
    .option(
      '--once',
      'one attempt: exit 20 when not allow-listed, 21 at a plan limit, 75 on a transient failure, instead of retrying every DAEMON_INTERVAL',
    )
    .action(async (options: { envFile?: string; once?: boolean }) => {
      // loaded when the command runs: PKCS#11 and X.509 would slow every --help
      const { readCertificateFile, registerOnce } = await import('../register/auto-register.ts');
      const { openSecureElement } = await import('../se/open.ts');
      const log = consoleLog;
      // Under the unit, systemd has read the env file into the environment already (and it may
      // be absent: `EnvironmentFile=-`); by hand, the file is read here.
      const settings = agentSettings(settingSource(options.envFile, process.env, false));
      readCertificateFile(settings.rootCrt, 'ROOT_CRT');
      const se = openSecureElement(settings, { initialiseToken: true, log });
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

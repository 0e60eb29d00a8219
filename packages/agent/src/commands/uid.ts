import type { Command } from 'commander';
import { seSettings, settingSource } from '../settings/settings.ts';

/** `keyferry-agent uid [--decimal]`: what `ssscli se05x uid` printed, or the 42-digit form. */
export function registerUid(program: Command): void {
  program
    .command('uid')
    .description("print the secure element's unique ID (Unique ID: <36 hex>), the device id to allow-list")
    .option('--env-file <file>', 'settings file (default /etc/default/lmp-el2go-auto-register)')
    .option('--decimal', 'print the 42-digit decimal form instead')
    .action(async (options: { envFile?: string; decimal?: boolean }) => {
      // loaded when the command runs: PKCS#11 and X.509 would slow every --help
      const { deviceIdFromUid } = await import('@keyferry/core');
      const { openSecureElement } = await import('../se/open.ts');
      const settings = seSettings(settingSource(options.envFile, process.env, false));
      const se = openSecureElement(settings);
      try {
        const id = deviceIdFromUid(se.uid());
        process.stdout.write(options.decimal ? `${id.decimal}\n` : `Unique ID: ${id.hex}\n`);
      } finally {
        se.close();
      }
    });
}

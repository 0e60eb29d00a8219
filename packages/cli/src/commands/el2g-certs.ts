import type { Command } from 'commander';
import { commandContext } from '../context.ts';
import { formatTable, printJson } from '../output.ts';
import { durationFromNow } from './duration-flag.ts';

interface ExpiringAnswer {
  within: string;
  until: string;
  certificates: Array<{
    group: string;
    deviceId: string;
    object: string | null;
    serial: string;
    notAfter: string;
    rotationRequested: boolean;
  }>;
  truncated: boolean;
}

/** `keyferry el2g certs expiring --within 30d`: device certificates by expiry, per group. */
export function registerEl2gCerts(el2g: Command): void {
  const certs = el2g.command('certs').description('device certificates issued by the service');
  certs
    .command('expiring')
    .description(
      'live device certificates expiring within a duration, per group, soonest first (a "# <group>" heading and a DEVICE, OBJECT, SERIAL, EXPIRES, ROTATION table each)',
    )
    .requiredOption(
      '--within <duration>',
      'how far ahead to look: a whole number and s, m, h, d, w or y (e.g. 30d)',
    )
    .action(async (opts: { within: string }, command: Command) => {
      const { api, out } = commandContext(command);
      durationFromNow('--within', opts.within); // refuses a bad duration before any request
      const answer = await api.call<ExpiringAnswer>(
        'GET',
        api.factoryPath(`el2g/certificates/expiring?within=${encodeURIComponent(opts.within)}`),
      );
      if (out.json) return printJson(out, answer);
      out.write(formatExpiring(answer));
    });
}

/** The table form: one section per group, or a line saying none expire. */
export function formatExpiring(answer: ExpiringAnswer): string {
  if (answer.certificates.length === 0)
    return `No certificate expires within ${answer.within} (before ${answer.until}).\n`;
  const groups = new Map<string, ExpiringAnswer['certificates']>();
  for (const c of answer.certificates) groups.set(c.group, [...(groups.get(c.group) ?? []), c]);
  let text = '';
  for (const [group, list] of groups) {
    text += `${text === '' ? '' : '\n'}# ${group} (${list.length})\n`;
    text += formatTable(
      ['DEVICE', 'OBJECT', 'SERIAL', 'EXPIRES', 'ROTATION'],
      list.map((c) => [
        c.deviceId,
        c.object ?? '',
        c.serial,
        c.notAfter,
        c.rotationRequested ? 'requested' : '-',
      ]),
      '\t',
    );
  }
  if (answer.truncated) text += `\n(only the first ${answer.certificates.length} are listed)\n`;
  return text;
}

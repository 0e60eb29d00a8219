import type { Command } from 'commander';
import { CliError } from '../cli-error.ts';
import { commandContext } from '../context.ts';
import { formatTable, printJson } from '../output.ts';
import { durationFromNow, durationSeconds } from './duration-flag.ts';

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
  certs
    .command('set-validity')
    .description(
      'set how long the certificates of a CERTIFICATE object live and when devices renew them, finer than a day (e.g. a 2-minute certificate renewed 90s before expiry); give at least one of the three flags',
    )
    .argument('<object>', 'the CERTIFICATE secure object, e.g. fio-device-gateway-ca')
    .option('--validity <duration>', 'validity of first certificates (e.g. 2m, 12h, 1y; at least 60s)')
    .option('--renewal-validity <duration>', 'validity of renewed certificates (at least 60s)')
    .option(
      '--renewal-window <duration>',
      'devices renew this long before expiry (shorter than the validity)',
    )
    .action(
      async (
        name: string,
        opts: { validity?: string; renewalValidity?: string; renewalWindow?: string },
        command: Command,
      ) => {
        const { api, out } = commandContext(command);
        if ([opts.validity, opts.renewalValidity, opts.renewalWindow].every((v) => v === undefined)) {
          throw new CliError(
            `nothing to change for ${name}: give at least one of --validity, --renewal-validity, --renewal-window`,
            2,
          );
        }
        const body = {
          ...(opts.validity === undefined
            ? {}
            : { validitySeconds: durationSeconds('--validity', opts.validity) }),
          ...(opts.renewalValidity === undefined
            ? {}
            : { renewalValiditySeconds: durationSeconds('--renewal-validity', opts.renewalValidity) }),
          ...(opts.renewalWindow === undefined
            ? {}
            : { renewalWindowSeconds: durationSeconds('--renewal-window', opts.renewalWindow) }),
        };
        const { content } = await api.call<{ content: Array<{ id: number; name: string }> }>(
          'GET',
          api.factoryPath('el2g-proxy/secure-objects'),
        );
        const object = content.find((o) => o.name === name);
        if (!object)
          throw new CliError(`no secure object ${name} in factory ${api.factory}; see keyferry el2g status`);
        const answer = await api.call<{
          name: string;
          validitySeconds: number | null;
          renewalValiditySeconds: number;
          renewalWindowSeconds: number;
        }>('PATCH', api.factoryPath(`el2g-proxy/secure-objects/${object.id}`), body);
        if (out.json) return printJson(out, answer);
        out.write(
          `${answer.name}: first certificates ${answer.validitySeconds === null ? 'by days' : `${answer.validitySeconds}s`}, renewed ${answer.renewalValiditySeconds}s, renewal from ${answer.renewalWindowSeconds}s before expiry\n`,
        );
      },
    );
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

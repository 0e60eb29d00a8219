import { readFileSync } from 'node:fs';
import { DEVICE_ID_FORMS, deviceIdProblem, tryParseDeviceId } from '@keyferry/core';
import type { Command } from 'commander';
import { CliError } from '../cli-error.ts';
import { type CommandContext, commandContext } from '../context.ts';
import { BatchesInterrupted, type DeviceAnswer, type SentId, sendInBatches } from '../devices/batches.ts';
import { parseIdFile } from '../devices/id-file.ts';
import { createProgress } from '../devices/progress.ts';
import {
  formatDeviceShow,
  formatPlanSection,
  formatRenewalSection,
  type PlanUsage,
  type RenewalSettings,
  StreamingTable,
} from '../devices/render.ts';
import { formatDeviceLine, formatImportSummary, summarize } from '../devices/summary.ts';
import { printJson, Spool } from '../output.ts';
import { wordlessDefault } from '../usage.ts';
import type { StatusSection } from './el2g-status.ts';

/** Rows asked for per page while listing: memory stays flat however long the allow-list is. */
export const LIST_PAGE = 1_000;
const NC12 = /^[0-9]{12}$/;

interface ListedDevice {
  'device-group': string;
  /** fioctl decoded a number or a numeric string; keyferryd sends a string (42 digits exceed a double). */
  id: string | number;
  'last-connection': string | null;
}

interface RotateOptions {
  group?: string;
  all?: boolean;
  object?: string;
}

interface AddOptions {
  production?: boolean;
  file?: string;
}

/** `keyferry el2g devices [list] | add | delete | rotate | show`: the allow-list. */
export function registerEl2gDevices(el2g: Command): void {
  const devices = el2g
    .command('devices')
    .description('the allow-list: devices (by secure element UID) that may get their credentials');

  wordlessDefault(
    devices
      .command('list', { isDefault: true })
      .description(
        'list allow-listed devices (GROUP, ID; --wide adds LAST CONNECTION), page by page (the default)',
      )
      .option('--wide', 'also show LAST CONNECTION, the last time the device reached the device-link'),
  ).action(async (opts: { wide?: boolean }, command: Command) =>
    listDevices(commandContext(command), opts.wide === true),
  );

  devices
    .command('add')
    .description(
      `allow-list devices of a product: ids as arguments or --file (one id a line, or CSV with an id column); an id is ${DEVICE_ID_FORMS}. ` +
        'With one id it prints nothing on success (as fioctl), with several a line per id',
    )
    .argument('<12nc>', 'product id, e.g. 935389312472')
    .argument('[device-ids...]', `device ids: ${DEVICE_ID_FORMS}`)
    .option('--production', 'use the production group fio-<12nc>-production (default: fio-<12nc>)')
    .option('--file <file>', 'read the ids from FILE (one a line, or CSV with an id column); shows progress')
    .action(async (nc12: string, ids: string[], opts: AddOptions, command: Command) => {
      const ctx = commandContext(command);
      checkNc12(nc12, 'add');
      if (opts.file !== undefined) {
        if (ids.length > 0) throw new CliError('give device ids as arguments or with --file, not both', 2);
        return addFromFile(ctx, nc12, opts.production === true, opts.file);
      }
      if (ids.length === 0) throw new CliError('name at least one device id, or --file FILE', 2);
      return changeDevices(ctx, 'POST', nc12, opts.production === true, checkIds(ids));
    });

  devices
    .command('delete')
    .description(
      'remove devices from the allow-list: they can no longer enroll and their certificates are revoked. ' +
        'With one id it prints nothing on success (as fioctl), with several a line per id',
    )
    .argument('<12nc>', 'product id, e.g. 935389312472')
    // optional for commander, so that a missing 12NC is told as such (checkNc12), not as a missing id
    .argument('[device-ids...]', `device ids: ${DEVICE_ID_FORMS}`)
    .option('--production', 'the production group fio-<12nc>-production (default: fio-<12nc>)')
    .action(async (nc12: string, ids: string[], opts: AddOptions, command: Command) => {
      const ctx = commandContext(command);
      checkNc12(nc12, 'delete');
      if (ids.length === 0) throw new CliError('name at least one device id after the 12NC', 2);
      return changeDevices(ctx, 'DELETE', nc12, opts.production === true, checkIds(ids));
    });

  devices
    .command('rotate')
    .description(
      'mark device certificates for rotation: each device learns it from its manifest (rotate: true) on its next check, ' +
        'enrolls a new certificate, and the old one is revoked when it reports the new one. Prints the counts',
    )
    .argument('[device-ids...]', `device ids: ${DEVICE_ID_FORMS}`)
    .option('--group <group>', 'every device of this group (e.g. fio-935389312472)')
    .option('--all', 'every device of the factory')
    .option('--object <name>', 'only this CERTIFICATE object (default: every one)')
    .action(async (ids: string[], opts: RotateOptions, command: Command) => {
      const { api, out } = commandContext(command);
      const chosen = [ids.length > 0, opts.group !== undefined, opts.all === true].filter(Boolean).length;
      if (chosen !== 1)
        throw new CliError('select the devices to rotate: device ids, --group G or --all (exactly one)', 2);
      if (ids.length > 0) checkIds(ids);
      const answer = await api.call<{ devices: number; marked: number; alreadyMarked: number }>(
        'POST',
        api.factoryPath('el2g/devices/rotate'),
        {
          ...(ids.length > 0 ? { devices: ids } : {}),
          ...(opts.group !== undefined ? { group: opts.group } : {}),
          ...(opts.all ? { all: true } : {}),
          ...(opts.object !== undefined ? { object: opts.object } : {}),
        },
      );
      if (out.json) return printJson(out, answer);
      out.write(
        `Devices selected: ${answer.devices}\nCertificates marked for rotation: ${answer.marked}\nAlready marked: ${answer.alreadyMarked}\n`,
      );
    });

  devices
    .command('show')
    .description(
      "show a device's hardware type, assigned secure objects with their state, and its certificates",
    )
    .argument('<device-id>', `device id: ${DEVICE_ID_FORMS}`)
    .action(async (id: string, _opts: unknown, command: Command) => {
      const { api, out } = commandContext(command);
      checkIds([id]);
      const product = await api.call<{ commercialName: string; nc12: string }>(
        'GET',
        api.factoryPath(`el2g-proxy/devices/${id}/product`),
      );
      const provisionings = await api.call<{ content: Parameters<typeof formatDeviceShow>[1] }>(
        'GET',
        api.factoryPath(`el2g-proxy/rtp/devices/${id}/secure-object-provisionings`),
      );
      if (out.json) return printJson(out, { product, secureObjects: provisionings.content });
      out.write(formatDeviceShow(product, provisionings.content));
    });
}

/** The renewal section of `el2g status` (after fioctl's four, before the plan). */
export const renewalStatusSection: StatusSection = {
  name: 'renewal',
  read: async ({ api }) =>
    formatRenewalSection(
      (await api.call<{ content: RenewalSettings[] }>('GET', api.factoryPath('el2g-proxy/secure-objects')))
        .content,
    ),
};

/** The plan section of `el2g status` (after fioctl's four). */
export const planStatusSection: StatusSection = {
  name: 'plan',
  read: async ({ api }) => formatPlanSection(await api.call<PlanUsage>('GET', api.factoryPath('el2g/plan/'))),
};

/** The first word must be the product's 12NC; a device id there means the 12NC was left out. */
function checkNc12(nc12: string, command: 'add' | 'delete'): void {
  if (NC12.test(nc12)) return;
  if (tryParseDeviceId(nc12) !== undefined) {
    throw new CliError(
      `${nc12} is a device id: a 12NC (product id) is needed first, as in ` +
        `keyferry el2g devices ${command} 935389312472 ${nc12} (keyferry el2g status lists the factory's product ids)`,
      2,
    );
  }
  throw new CliError(
    `invalid product id ${JSON.stringify(nc12)}: a 12NC is 12 decimal digits, e.g. 935389312472`,
    2,
  );
}

/** Refuses bad ids before any request, naming each and what is wrong with it. */
function checkIds(ids: readonly string[]): SentId[] {
  const byProblem = new Map<string, string[]>();
  for (const id of ids) {
    const problem = deviceIdProblem(id);
    if (problem !== undefined) byProblem.set(problem, [...(byProblem.get(problem) ?? []), id]);
  }
  if (byProblem.size > 0) {
    const message = [...byProblem]
      .map(
        ([problem, bad]) =>
          `invalid device id${bad.length > 1 ? 's' : ''} ${bad.map((b) => JSON.stringify(b)).join(', ')}: ${problem}`,
      )
      .join('; ');
    throw new CliError(message, 2);
  }
  return ids.map((text) => ({ text }));
}

async function changeDevices(
  { api, out }: CommandContext,
  method: 'POST' | 'DELETE',
  nc12: string,
  production: boolean,
  ids: SentId[],
): Promise<void> {
  const answers = await sendInBatches(api, method, { nc12, production }, ids, () => {});
  const failed = answers.filter((a) => !OK_STATUSES.has(a.answer.status));
  const only = answers.length === 1 ? answers[0] : undefined;
  // --json: the answers on stdout, and the same ERROR line and exit code as without it
  if (out.json)
    printJson(
      out,
      answers.map((a) => a.answer),
    );
  // one id: silent on success and one ERROR line otherwise, as fioctl; several: a line each
  else if (only === undefined) {
    for (const { sent, answer } of answers) out.write(formatDeviceLine(sent, answer) + '\n');
  }
  if (failed.length === 0) return;
  if (only !== undefined) throw new CliError(formatDeviceLine(only.sent, only.answer));
  throw new CliError(
    `${failed.length} of ${answers.length} devices not ${method === 'POST' ? 'added' : 'deleted'} (see ${out.json ? 'their status in the JSON' : 'above'})`,
  );
}

const OK_STATUSES = new Set(['added', 'already-present', 'deleted', 'not-present']);

async function addFromFile(
  ctx: CommandContext,
  nc12: string,
  production: boolean,
  file: string,
): Promise<void> {
  const { api, out } = ctx;
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new CliError(
      `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  const parsed = parseIdFile(file, bytes);
  const ids = parsed.ids.map((i) => ({ text: i.text, line: i.line }));
  const progress = createProgress(process.stderr, ids.length);
  let answers: Array<{ sent: SentId; answer: DeviceAnswer }>;
  let interrupted: BatchesInterrupted | undefined;
  try {
    answers = await sendInBatches(api, 'POST', { nc12, production }, ids, (done) => progress.update(done));
  } catch (err) {
    if (!(err instanceof BatchesInterrupted)) throw err;
    interrupted = err;
    answers = err.done;
  } finally {
    progress.finish();
  }
  const summary = summarize(parsed, answers);
  if (interrupted) {
    // what the committed batches did, then why the rest was not sent and how to send it
    const { notSent } = interrupted;
    const from = notSent[0]?.line;
    if (out.json) printJson(out, { ...summary, notSent: { count: notSent.length, fromLine: from ?? null } });
    else
      out.write(`${formatImportSummary(summary)}Not sent: ${notSent.length}${from ? ` (from line ${from})` : ''}
`);
    const cause = interrupted.cause instanceof Error ? interrupted.cause.message : String(interrupted.cause);
    throw new CliError(
      `the ids from line ${from ?? '?'} of ${file} on were not sent: ${cause}; the ${answers.length} before them were (see the summary). Run the same command again once that is solved: ids already added answer "already present"`,
    );
  }
  if (out.json) printJson(out, summary);
  else out.write(formatImportSummary(summary));
  const notAdded = summary.invalid.length + summary.inOtherGroup.length + summary.refused.length;
  if (notAdded > 0) throw new CliError(`${notAdded} ids from ${file} were not added (see the summary)`);
}

async function listDevices({ api, out }: CommandContext, wide: boolean): Promise<void> {
  // --json: the array goes to a spool, printed once the last page came, so that a page that
  // fails leaves stdout empty rather than JSON cut off; the table streams, a line per device
  const spool = out.json ? new Spool() : undefined;
  const write = (text: string) => (spool ? spool.write(text) : out.write(text));
  try {
    let path = api.factoryPath(`el2g/devices/?limit=${LIST_PAGE}`);
    let table: StreamingTable | undefined;
    let first = true;
    if (out.json) write('[');
    for (;;) {
      const { body, headers } = await api.callWithHeaders<ListedDevice[]>('GET', path);
      if (!table) {
        const groups = String(headers['x-device-groups'] ?? '').split(',');
        const widest = Math.max(
          0,
          ...groups.map((g) => g.length),
          ...body.map((d) => d['device-group'].length),
        );
        // fioctl's two columns; LAST CONNECTION only when asked for
        table = new StreamingTable(wide ? ['GROUP', 'ID', 'LAST CONNECTION'] : ['GROUP', 'ID'], [widest, 42]);
        if (!out.json) write(table.head());
      }
      let chunk = '';
      for (const d of body) {
        if (out.json) {
          chunk += `${first ? '\n' : ',\n'}  ${JSON.stringify(d)}`;
          first = false;
        } else {
          const row = [d['device-group'], String(d.id)];
          chunk += table.line(wide ? [...row, secondsOnly(d['last-connection'])] : row);
        }
      }
      write(chunk);
      const next = headers['x-next-cursor'];
      if (typeof next !== 'string' || next === '') break;
      path = api.factoryPath(`el2g/devices/?limit=${LIST_PAGE}&after=${encodeURIComponent(next)}`);
    }
    if (out.json) write(first ? ']\n' : '\n]\n');
    await spool?.copyTo(out);
  } finally {
    spool?.close();
  }
}

/** `--wide` prints times to the second (`2026-11-29T10:01:02Z`); the API keeps milliseconds. */
function secondsOnly(iso: string | null): string {
  return iso ? iso.replace(/\.\d+Z$/, 'Z') : '';
}

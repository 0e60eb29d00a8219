import { readFileSync } from 'node:fs';
import { DEVICE_ID_FORMS, deviceIdProblem } from '@keyferry/core';
import type { Command } from 'commander';
import { CliError } from '../cli-error.ts';
import { type CommandContext, commandContext } from '../context.ts';
import { type DeviceAnswer, type SentId, sendInBatches } from '../devices/batches.ts';
import { parseIdFile } from '../devices/id-file.ts';
import { createProgress } from '../devices/progress.ts';
import { formatDeviceShow, formatPlanSection, type PlanUsage, StreamingTable } from '../devices/render.ts';
import { formatDeviceLine, formatImportSummary, summarize } from '../devices/summary.ts';
import { printJson } from '../output.ts';
import type { StatusSection } from './el2g-status.ts';

/** Rows asked for per page while listing: memory stays flat however long the allow-list is. */
export const LIST_PAGE = 1_000;
const NC12 = /^[0-9]{12}$/;

interface ListedDevice {
  'device-group': string;
  id: string;
  'last-connection': string | null;
}

interface AddOptions {
  production?: boolean;
  file?: string;
}

/** `keyferry el2g devices [list] | add | delete | show`: the allow-list. */
export function registerEl2gDevices(el2g: Command): void {
  const devices = el2g
    .command('devices')
    .description('the allow-list: devices (by secure element UID) that may get their credentials');

  devices
    .command('list', { isDefault: true })
    .description('list allow-listed devices (GROUP, ID, LAST CONNECTION), page by page (the default)')
    .action(async (_opts: unknown, command: Command) => listDevices(commandContext(command)));

  devices
    .command('add')
    .description(
      `allow-list devices of a product: ids as arguments or --file (one id a line, or CSV with an id column); an id is ${DEVICE_ID_FORMS}`,
    )
    .argument('<12nc>', 'product id, e.g. 935389312472')
    .argument('[device-ids...]', `device ids: ${DEVICE_ID_FORMS}`)
    .option('--production', 'use the production group fio-<12nc>-production (default: fio-<12nc>)')
    .option('--file <file>', 'read the ids from FILE (one a line, or CSV with an id column); shows progress')
    .action(async (nc12: string, ids: string[], opts: AddOptions, command: Command) => {
      const ctx = commandContext(command);
      checkNc12(nc12);
      if (opts.file !== undefined) {
        if (ids.length > 0) throw new CliError('give device ids as arguments or with --file, not both');
        return addFromFile(ctx, nc12, opts.production === true, opts.file);
      }
      if (ids.length === 0) throw new CliError('name at least one device id, or --file FILE');
      return changeDevices(ctx, 'POST', nc12, opts.production === true, checkIds(ids));
    });

  devices
    .command('delete')
    .description(
      'remove devices from the allow-list: they can no longer enroll and their certificates are revoked',
    )
    .argument('<12nc>', 'product id, e.g. 935389312472')
    .argument('<device-ids...>', `device ids: ${DEVICE_ID_FORMS}`)
    .option('--production', 'the production group fio-<12nc>-production (default: fio-<12nc>)')
    .action(async (nc12: string, ids: string[], opts: AddOptions, command: Command) => {
      const ctx = commandContext(command);
      checkNc12(nc12);
      return changeDevices(ctx, 'DELETE', nc12, opts.production === true, checkIds(ids));
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

/** The plan section of `el2g status` (after CLI.md's four). */
export const planStatusSection: StatusSection = async ({ api }) =>
  formatPlanSection(await api.call<PlanUsage>('GET', api.factoryPath('el2g/plan/')));

function checkNc12(nc12: string): void {
  if (!NC12.test(nc12))
    throw new CliError(
      `invalid product id ${JSON.stringify(nc12)}: a 12NC is 12 decimal digits, e.g. 935389312472`,
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
  if (out.json)
    return printJson(
      out,
      answers.map((a) => a.answer),
    );
  for (const { sent, answer } of answers) out.write(formatDeviceLine(sent, answer) + '\n');
  const failed = answers.filter((a) => !OK_STATUSES.has(a.answer.status));
  if (failed.length > 0) {
    throw new CliError(
      `${failed.length} of ${answers.length} devices not ${method === 'POST' ? 'added' : 'deleted'} (see above)`,
    );
  }
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
  try {
    answers = await sendInBatches(api, 'POST', { nc12, production }, ids, (done) => progress.update(done));
  } finally {
    progress.finish();
  }
  const summary = summarize(parsed, answers);
  if (out.json) printJson(out, summary);
  else out.write(formatImportSummary(summary));
  const notAdded = summary.invalid.length + summary.inOtherGroup.length + summary.refused.length;
  if (notAdded > 0) throw new CliError(`${notAdded} ids from ${file} were not added (see the summary)`);
}

async function listDevices({ api, out }: CommandContext): Promise<void> {
  let path = api.factoryPath(`el2g/devices/?limit=${LIST_PAGE}`);
  let table: StreamingTable | undefined;
  let first = true;
  if (out.json) out.write('[');
  for (;;) {
    const { body, headers } = await api.callWithHeaders<ListedDevice[]>('GET', path);
    if (!table) {
      const groups = String(headers['x-device-groups'] ?? '').split(',');
      const widest = Math.max(
        0,
        ...groups.map((g) => g.length),
        ...body.map((d) => d['device-group'].length),
      );
      table = new StreamingTable(['GROUP', 'ID', 'LAST CONNECTION'], [widest, 42]);
      if (!out.json) out.write(table.head());
    }
    let chunk = '';
    for (const d of body) {
      if (out.json) {
        chunk += `${first ? '\n' : ',\n'}  ${JSON.stringify(d)}`;
        first = false;
      } else chunk += table.line([d['device-group'], d.id, secondsOnly(d['last-connection'])]);
    }
    out.write(chunk);
    const next = headers['x-next-cursor'];
    if (typeof next !== 'string' || next === '') break;
    path = api.factoryPath(`el2g/devices/?limit=${LIST_PAGE}&after=${encodeURIComponent(next)}`);
  }
  if (out.json) out.write(first ? ']\n' : '\n]\n');
}

/** CLI.md prints times to the second (`2026-11-29T10:01:02Z`); the API keeps milliseconds. */
function secondsOnly(iso: string | null): string {
  return iso ? iso.replace(/\.\d+Z$/, 'Z') : '';
}

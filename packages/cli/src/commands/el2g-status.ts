import type { Command } from 'commander';
import type { ApiClient } from '../api-client.ts';
import { CliError } from '../cli-error.ts';
import { type CommandContext, commandContext } from '../context.ts';
import { formatTable, printJson } from '../output.ts';

/** 12NCs arrive as JSON numbers (fioctl decoded `product-ids` as `[]int`) or strings. */
export type Nc12 = string | number;

/** A 12NC has 12 decimal digits; as a JSON number it loses leading zeros. */
const NC12_DIGITS = 12;

export interface Product {
  nc12: Nc12;
  commercialName: string;
}

export interface El2gOverview {
  subdomain: string;
  /** 12NCs as JSON numbers (fioctl's `[]int`). */
  'product-ids': Nc12[];
  plan?: Record<string, unknown>;
}

export interface SecureObjectRow {
  id: number;
  type: string;
  name: string;
  'object-id': string;
}

export interface IntermediateCaRow {
  id: number;
  name: string;
  algorithm: string;
  value: string;
}

/** What `el2g status` reads, in fioctl's order of calls. */
export interface El2gStatus {
  products: Product[];
  overview: El2gOverview;
  secureObjects: SecureObjectRow[];
  intermediateCas: IntermediateCaRow[];
}

/**
 * A section printed after fioctl's four (plan and usage, …): `read` gets what was already read
 * and returns its text (ending in a newline), or '' to print nothing; `name` says which section
 * could not be read.
 */
export interface StatusSection {
  name: string;
  read(ctx: CommandContext, status: El2gStatus): Promise<string>;
}

export async function fetchEl2gStatus(api: ApiClient): Promise<El2gStatus> {
  const products = await api.call<Product[]>('GET', api.factoryPath('el2g-proxy/products'));
  const overview = await api.call<El2gOverview>('GET', api.factoryPath('el2g/overview/'));
  const secureObjects = await api.call<SecureObjectRow[]>('GET', api.factoryPath('el2g/secure-objects/'));
  const intermediateCas = await api.call<IntermediateCaRow[]>(
    'GET',
    api.factoryPath('el2g/intermediate-cas/'),
  );
  return { products, overview, secureObjects, intermediateCas };
}

/** fioctl's four sections, each ending in a newline: Subdomain, Product IDs, Secure Objects, Intermediate CAs. */
export function el2gStatusSections(status: El2gStatus): string[] {
  const names = new Map(
    status.products.map((p) => [String(p.nc12).padStart(NC12_DIGITS, '0'), p.commercialName]),
  );
  const products = status.overview['product-ids'].map((id) => {
    const nc12 = String(id).padStart(NC12_DIGITS, '0');
    return [nc12, names.get(nc12) ?? ''];
  });
  const objects = status.secureObjects.map((o) => [o.type, o.name, o['object-id']]);
  const cas = status.intermediateCas.map(
    (ca) => `Name: ${ca.name}\nAlgorithm: ${ca.algorithm}\nID: ${ca.id}\n${ensureNewline(ca.value)}`,
  );
  return [
    `# Subdomain: ${status.overview.subdomain}\n`,
    `# Product IDs\n${formatTable(['ID', 'NAME'], products, '\t')}`,
    `# Secure Objects\n${formatTable(['TYPE', 'NAME', 'OBJECT ID'], objects, '\t')}`,
    `# Intermediate CAs\n${cas.join('\n')}`,
  ];
}

/** `keyferry el2g status`; `extraSections` print after fioctl's four, in order. */
export function registerEl2gStatus(el2g: Command, extraSections: readonly StatusSection[] = []): void {
  el2g
    .command('status')
    .description("show the factory's device-link subdomain, products, secure objects and intermediate CAs")
    .action(async (_opts: unknown, command: Command) => {
      const ctx = commandContext(command);
      const status = await fetchEl2gStatus(ctx.api);
      if (ctx.out.json) return printJson(ctx.out, status);
      // fioctl's four first: a section of keyferry's own that cannot be read does not hide them
      ctx.out.write(el2gStatusSections(status).join('\n'));
      const unread: string[] = [];
      for (const extra of extraSections) {
        try {
          const text = await extra.read(ctx, status);
          if (text !== '') ctx.out.write(`\n${text}`);
        } catch (err) {
          if (!(err instanceof Error)) throw err;
          unread.push(`the ${extra.name} section: ${err.message}`);
        }
      }
      if (unread.length > 0) throw new CliError(`el2g status could not read ${unread.join('; ')}`);
    });
}

function ensureNewline(text: string): string {
  return text.endsWith('\n') ? text : `${text}\n`;
}

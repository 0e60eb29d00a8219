import type { Config } from '../config/schema.ts';

export interface Product {
  nc12: string;
  name: string;
  /** PEM files of the vendor CAs that verify this product's secure element identities. */
  trustAnchorFiles: string[];
}

/** The products keyferry knows without configuration (docs/configuration.md). */
export const BUILTIN_PRODUCTS: readonly Product[] = [
  { nc12: '935389312472', name: 'SE050C2HQ1/Z01V3', trustAnchorFiles: [] },
  { nc12: '935414457472', name: 'SE051', trustAnchorFiles: [] },
];

/** Built-ins, overridden or extended by `products:` in the config (same 12NC replaces). */
export function productCatalogue(config: Pick<Config, 'products'>): Map<string, Product> {
  const catalogue = new Map<string, Product>(BUILTIN_PRODUCTS.map((p) => [p.nc12, { ...p }]));
  for (const p of config.products) {
    catalogue.set(p.nc12, { nc12: p.nc12, name: p.name, trustAnchorFiles: [...p.trustAnchors] });
  }
  return catalogue;
}

/** `fio-<12nc>` (CI, the default) and `fio-<12nc>-production`. */
export function deviceGroupName(nc12: string, production: boolean): string {
  return production ? `fio-${nc12}-production` : `fio-${nc12}`;
}

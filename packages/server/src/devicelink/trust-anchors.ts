import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { type NativeAnchor, nativeAnchor, splitPemBundle } from '@keyferry/core';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import { BUILTIN_PRODUCTS, type Product, productCatalogue } from '../el2g/products.ts';

/** The simulated vendor CA keyferry-sim keeps in the shared data dir (packages/sim/README.md). */
export function simVendorCaFile(dataDir: string): string {
  return join(dataDir, 'sim', 'vendor-ca.pem');
}

/**
 * The vendor trust anchors of each product. With a config file: only the PEM files of
 * `products[].trustAnchors`. Without one (development): the built-in products also trust
 * keyferry-sim's vendor CA, with a warning. Files are read lazily and read again when a chain
 * fails to verify, because keyferry-sim may make its CA after keyferryd started.
 */
export class TrustAnchors {
  readonly #catalogue: Map<string, Product>;
  readonly #files = new Map<string, string[]>();
  readonly #cache = new Map<string, { anchors: Uint8Array[]; native: NativeAnchor[]; stamp: string }>();
  readonly #log: Logger;
  #warned = false;

  constructor(config: Pick<Config, 'products' | 'dataDir'>, embeddedDefaults: boolean, log: Logger) {
    this.#catalogue = productCatalogue(config);
    this.#log = log;
    const builtin = new Set(BUILTIN_PRODUCTS.map((p) => p.nc12));
    for (const product of this.#catalogue.values()) {
      const files = [...product.trustAnchorFiles];
      if (embeddedDefaults && builtin.has(product.nc12)) files.push(simVendorCaFile(config.dataDir));
      this.#files.set(product.nc12, files);
    }
  }

  /** The product named by a 12NC, or undefined when keyferry does not know it. */
  product(nc12: string): Product | undefined {
    return this.#catalogue.get(nc12);
  }

  /**
   * DER anchors of a known product. `refresh` reads the files again when one appeared,
   * disappeared or changed since (a stat per file, so failing clients cost no file reads).
   */
  anchors(nc12: string, refresh = false): Uint8Array[] {
    return this.#load(nc12, refresh).anchors;
  }

  /**
   * The same anchors judged and with their keys imported once, for the native check of a leaf
   * they issued directly (the device-link's hot path); an anchor that may not issue is left out.
   */
  nativeAnchors(nc12: string): NativeAnchor[] {
    return this.#load(nc12, false).native;
  }

  #load(nc12: string, refresh: boolean) {
    const cached = this.#cache.get(nc12);
    if (cached && !refresh) return cached;
    const files = this.#files.get(nc12) ?? [];
    const stamp = files
      .map((file) => (existsSync(file) ? `${file}@${statSync(file).mtimeMs}` : ''))
      .join('|');
    if (cached && cached.stamp === stamp) return cached;
    const anchors: Uint8Array[] = [];
    for (const file of files) {
      if (!existsSync(file)) continue;
      if (file.endsWith(join('sim', 'vendor-ca.pem')) && !this.#warned) {
        this.#warned = true;
        this.#log.warn(
          { file },
          'no config file: trusting the simulated SE05x vendor CA of keyferry-sim for the built-in products (development only)',
        );
      }
      try {
        anchors.push(...splitPemBundle(readFileSync(file, 'utf8')));
      } catch (error) {
        this.#log.error({ file, err: error }, 'cannot read a trust anchor file; skipping it');
      }
    }
    const loaded = {
      anchors,
      native: anchors.map(nativeAnchor).filter((a): a is NativeAnchor => a !== undefined),
      stamp,
    };
    this.#cache.set(nc12, loaded);
    return loaded;
  }
}

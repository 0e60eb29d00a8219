import { join } from 'node:path';
import { loadOrCreateVendorCa } from '@keyferry/sim';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { TrustAnchors } from '../../src/devicelink/trust-anchors.ts';
import { testDir } from '../support/temp-dir.ts';

describe('device-link trust anchors', () => {
  it('without a config file, trusts the keyferry-sim vendor CA for the built-in products once it exists, with a warning', async () => {
    const dataDir = testDir('keyferry-anchors-');
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) });
    const anchors = new TrustAnchors({ dataDir, products: [] }, true, log);
    expect(anchors.anchors('935389312472')).toEqual([]);
    const vendor = await loadOrCreateVendorCa(join(dataDir, 'sim'));
    expect(anchors.anchors('935389312472')).toEqual([]); // cached until a refresh…
    expect(anchors.anchors('935389312472', true)).toEqual([vendor.certificate]); // …which a failed check does
    expect(anchors.anchors('935414457472')).toEqual([vendor.certificate]);
    expect(lines.join('')).toContain('trusting the simulated SE05x vendor CA');
  });

  it('with a config file, trusts only the files products[].trustAnchors names', async () => {
    const dataDir = testDir('keyferry-anchors-');
    await loadOrCreateVendorCa(join(dataDir, 'sim'));
    const own = await loadOrCreateVendorCa(join(dataDir, 'own'));
    const anchors = new TrustAnchors(
      { dataDir, products: [{ nc12: '935414457472', name: 'SE051', trustAnchors: [own.certificateFile] }] },
      false,
      pino({ level: 'silent' }),
    );
    expect(anchors.anchors('935389312472', true)).toEqual([]);
    expect(anchors.anchors('935414457472', true)).toEqual([own.certificate]);
    expect(anchors.product('999999999999')).toBeUndefined();
  });
});

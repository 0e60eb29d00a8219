import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { releaseModule } from '@keyferry/pkcs11';
import { createSecureElement, loadOrCreateVendorCa } from '@keyferry/sim';
import { createSofthsmEnv, type SofthsmEnv } from '../../../../test/support/softhsm.ts';

/** The UID the fixtures give their secure element (the example id of the README). */
export const FIXTURE_UID = '04005001eee3ba1ee96e60047e57da0f6880';
export const PRODUCT = '935389312472';

/** One SoftHSM2 store and one soft directory, each holding an SE05x made by keyferry-sim's code. */
export interface SecureElementFixtures {
  readonly work: string;
  readonly softhsm: SofthsmEnv;
  readonly seDir: string;
  /** DER of the vendor CA that signed both identities. */
  readonly vendorCa: Uint8Array;
  readonly identityCertificates: { pkcs11: Uint8Array; soft: Uint8Array };
  cleanup(): void;
}

export async function createSecureElementFixtures(): Promise<SecureElementFixtures> {
  const work = mkdtempSync(join(tmpdir(), 'keyferry-agent-'));
  const softhsm = createSofthsmEnv();
  const vendor = await loadOrCreateVendorCa(join(work, 'sim'));
  const uid = { hex: FIXTURE_UID, decimal: BigInt(`0x${FIXTURE_UID}`).toString().padStart(42, '0') };
  const onToken = await createSecureElement({
    vendor,
    product: PRODUCT,
    uid,
    backend: { kind: 'pkcs11', module: softhsm.module },
  });
  const seDir = join(work, 'se');
  const inDir = await createSecureElement({
    vendor,
    product: PRODUCT,
    uid,
    backend: { kind: 'dir', dir: seDir },
  });
  return {
    work,
    softhsm,
    seDir,
    vendorCa: vendor.certificate,
    identityCertificates: { pkcs11: onToken.identityCertificate, soft: inDir.identityCertificate },
    cleanup() {
      releaseModule(softhsm.module);
      softhsm.cleanup();
      rmSync(work, { recursive: true, force: true });
    },
  };
}

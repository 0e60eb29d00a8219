import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fromPem, type Signer, selfSignedCa, softSigner, toPem } from '@keyferry/core';

/** Subject of the simulated chip vendor's root (it stands in for NXP's SE05x identity CA). */
export const VENDOR_CA_SUBJECT = { O: 'keyferry simulated SE05x vendor', CN: 'keyferry-sim SE05x vendor CA' };
export const VENDOR_CA_YEARS = 30;
export const VENDOR_CA_CERT_FILE = 'vendor-ca.pem';
export const VENDOR_CA_KEY_FILE = 'vendor-ca.key';

/** The simulated vendor CA: its certificate (DER) and a signer over its key. */
export interface VendorCa {
  readonly certificate: Uint8Array;
  readonly signer: Signer;
  /** Path of vendor-ca.pem, the file keyferryd trusts without a config file. */
  readonly certificateFile: string;
}

/** `<data dir>/sim`: the data dir is KEYFERRY_DATA_DIR or ./data, the same keyferryd uses. */
export function simDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(resolve(env.KEYFERRY_DATA_DIR || './data'), 'sim');
}

/**
 * Loads the vendor CA from `dir`, making it on first use: key `vendor-ca.key` (PKCS#8 PEM,
 * 0600) and `vendor-ca.pem`. The certificate is written last (atomically), so its presence
 * means the pair is complete; a second simulator racing the first waits for it.
 */
export async function loadOrCreateVendorCa(dir: string): Promise<VendorCa> {
  const certificateFile = join(dir, VENDOR_CA_CERT_FILE);
  const keyFile = join(dir, VENDOR_CA_KEY_FILE);
  if (!existsSync(certificateFile)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    let owner = true;
    try {
      writeFileSync(keyFile, pem, { mode: 0o600, flag: 'wx' });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      owner = false;
    }
    if (owner) {
      const certificate = await selfSignedCa({
        subject: VENDOR_CA_SUBJECT,
        signer: softSigner(privateKey),
        years: VENDOR_CA_YEARS,
      });
      const tmp = `${certificateFile}.${process.pid}.tmp`;
      writeFileSync(tmp, toPem(certificate, 'CERTIFICATE'), { mode: 0o644 });
      renameSync(tmp, certificateFile);
    } else {
      await waitFor(certificateFile);
    }
  }
  const key = createPrivateKey(readFileSync(keyFile, 'utf8'));
  return {
    certificate: fromPem(readFileSync(certificateFile, 'utf8'), 'CERTIFICATE'),
    signer: softSigner(key),
    certificateFile,
  };
}

async function waitFor(file: string): Promise<void> {
  for (let i = 0; i < 200 && !existsSync(file); i++) await new Promise((r) => setTimeout(r, 25));
  if (!existsSync(file)) {
    throw new Error(`${file} is missing beside its key; remove the sim directory's vendor-ca.* and retry`);
  }
}

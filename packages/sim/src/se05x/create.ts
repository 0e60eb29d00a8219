import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { type DeviceId, deviceIdToUid, toPem } from '@keyferry/core';
import { findSofthsmModule, initToken, openToken } from '@keyferry/pkcs11';
import { identityCertificate, randomUid } from './identity.ts';
import { SE_LAYOUT, SE_TOKEN } from './layout.ts';
import type { VendorCa } from './vendor-ca.ts';

/** Where the simulated secure element is made. */
export type SecureElementBackend =
  | { readonly kind: 'pkcs11'; readonly module?: string }
  | { readonly kind: 'dir'; readonly dir: string };

export interface CreateSecureElementOptions {
  readonly vendor: VendorCa;
  readonly product: string;
  readonly uid?: DeviceId;
  readonly backend: SecureElementBackend;
}

export interface CreatedSecureElement {
  readonly uid: DeviceId;
  readonly product: string;
  /** DER of the identity certificate (also stored on the element). */
  readonly identityCertificate: Uint8Array;
  /** Where it went: the token label or the directory. */
  readonly location: string;
}

/**
 * Plays the chip vendor: makes a secure element holding its UID, the identity key
 * (`SE_f0000000`, P-256, generated inside, never exported) and its certificate
 * (`SE_f0000001`) signed by the simulated vendor CA.
 */
export async function createSecureElement(
  options: CreateSecureElementOptions,
): Promise<CreatedSecureElement> {
  const uid = options.uid ?? randomUid();
  const { backend } = options;
  const make = (publicKeySpki: Uint8Array) =>
    identityCertificate({ vendor: options.vendor, uid, product: options.product, publicKeySpki });
  if (backend.kind === 'dir') {
    const cert = await createSoftElement(backend.dir, uid, make);
    return { uid, product: options.product, identityCertificate: cert, location: backend.dir };
  }
  const module = backend.module ?? findSofthsmModule();
  const softhsm = /softhsm/i.test(basename(module));
  const conf = process.env.SOFTHSM2_CONF;
  if (softhsm && conf && !existsSync(conf)) {
    throw new Error(
      `SOFTHSM2_CONF ${conf} does not exist; point it at a softhsm2.conf (directories.tokendir = <a directory>) or unset it`,
    );
  }
  let token: ReturnType<typeof openToken>;
  try {
    initToken({ module, label: SE_TOKEN.label, soPin: SE_TOKEN.soPin, userPin: SE_TOKEN.userPin });
    token = openToken({ module, tokenLabel: SE_TOKEN.label, pin: SE_TOKEN.userPin });
  } catch (error) {
    throw inSimTerms(error, softhsm);
  }
  try {
    token.putData({ label: SE_LAYOUT.uidLabel, value: deviceIdToUid(uid) });
    const { publicKeySpki } = token.generateEcKeyPair({
      label: SE_LAYOUT.identityKeyLabel,
      id: Buffer.from(SE_LAYOUT.identityKeyObjectId, 'hex'),
    });
    const cert = await make(publicKeySpki);
    token.putCertificate({
      label: SE_LAYOUT.identityCertLabel,
      id: Buffer.from(SE_LAYOUT.identityCertObjectId, 'hex'),
      der: cert,
    });
    return { uid, product: options.product, identityCertificate: cert, location: `token ${SE_TOKEN.label}` };
  } finally {
    token.close();
  }
}

async function createSoftElement(
  dir: string,
  uid: DeviceId,
  make: (spki: Uint8Array) => Promise<Uint8Array>,
): Promise<Uint8Array> {
  const needs = 'a soft secure element needs a new or empty directory';
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw new Error(`${dir} is not a directory; ${needs}`);
  if (existsSync(dir) && readdirSync(dir).length > 0) throw new Error(`${dir} is not empty; ${needs}`);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new Error(
      `cannot make ${dir} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); ${needs}`,
    );
  }
  chmodSync(dir, 0o700);
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = new Uint8Array(publicKey.export({ format: 'der', type: 'spki' }));
  const cert = await make(spki);
  const write = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text, { mode: 0o600, flag: 'wx' });
    chmodSync(path, 0o600);
  };
  write(SE_LAYOUT.uidFile, `${uid.hex}\n`);
  write(
    SE_LAYOUT.keyFile(SE_LAYOUT.identityKeyObjectId),
    privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
  );
  write(SE_LAYOUT.certFile(SE_LAYOUT.identityCertObjectId), toPem(cert, 'CERTIFICATE'));
  return cert;
}

/**
 * @keyferry/pkcs11 also serves the operator CLI, so its hint for a module that does not load
 * names the CLI's `--hsm-module` too; keyferry-sim has only PKCS11_MODULE. A SoftHSM2 that
 * fails to initialise most often cannot read SOFTHSM2_CONF or its token directory.
 */
function inSimTerms(error: unknown, softhsm: boolean): unknown {
  if (!(error instanceof Error)) return error;
  const loadHint = /; set PKCS11_MODULE\b[^;]*$/;
  if (/^PKCS#11 module .* could not be loaded/.test(error.message) && loadHint.test(error.message)) {
    error.message = error.message.replace(loadHint, '; set PKCS11_MODULE to the path of the module .so');
  } else if (/^PKCS#11 module .* failed to initialise/.test(error.message)) {
    const conf = process.env.SOFTHSM2_CONF;
    error.message += softhsm
      ? `; check that SOFTHSM2_CONF (${conf ? conf : "unset: SoftHSM2's default"}) names a readable softhsm2.conf whose directories.tokendir exists`
      : `; check the module's own configuration`;
  }
  return error;
}

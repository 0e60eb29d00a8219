import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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
  initToken({ module, label: SE_TOKEN.label, soPin: SE_TOKEN.soPin, userPin: SE_TOKEN.userPin });
  const token = openToken({ module, tokenLabel: SE_TOKEN.label, pin: SE_TOKEN.userPin });
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
  if (existsSync(dir) && readdirSync(dir).length > 0) {
    throw new Error(`${dir} is not empty; a soft secure element needs a new or empty directory`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
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

import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, isAbsolute, join } from 'node:path';
import {
  createCsr,
  fromPem,
  intermediateCaFromCsr,
  parseCertificate,
  publicKeysEqual,
  type Signer,
  softSigner,
  toPem,
} from '@keyferry/core';
import { CliError } from '../cli-error.ts';
import { type Hsm, openRootKey, ROOT_CERT_FILE } from './root-key.ts';

/** File names fioctl used in a PKI dir. */
export const TLS_CERT_FILE = 'tls-crt';
export const ONLINE_CA_CERT_FILE = 'online-crt';
export const LOCAL_CA_CERT_FILE = 'local-ca.pem';

/** Writes a new file 0400 (fioctl's mode for everything in the PKI dir); never overwrites. */
export function writeReadOnly(pkiDir: string, name: string, text: string): string {
  const path = join(pkiDir, name);
  writeFileSync(path, text, { mode: 0o400, flag: 'wx' });
  chmodSync(path, 0o400);
  return path;
}

/** Moves `name` aside to `name.bak` (as fioctl did before replacing tls-crt or online-crt). */
export function moveAside(pkiDir: string, name: string, say: (line: string) => void, what: string): void {
  const path = join(pkiDir, name);
  if (!existsSync(path)) return;
  say(`Moving existing ${what} file from ${name} to ${name}.bak`);
  renameSync(path, `${path}.bak`);
}

/** A file the operator named: a plain name is looked up in the PKI dir, a path is taken as is. */
export function pkiFile(pkiDir: string, name: string): string {
  return isAbsolute(name) || name.includes('/') ? name : join(pkiDir, name);
}

/** The root of a PKI dir, opened for signing and checked to be this factory's root-crt. */
export interface PkiRoot {
  der: Uint8Array;
  signer: Signer;
  close(): void;
}

export async function openPkiRoot(
  pkiDir: string,
  hsm: Hsm | undefined,
  factoryRootPem: string,
  factory: string,
): Promise<PkiRoot> {
  const file = join(pkiDir, ROOT_CERT_FILE);
  let der: Uint8Array;
  try {
    der = fromPem(readFileSync(file, 'utf8'), 'CERTIFICATE');
  } catch (err) {
    throw new CliError(
      `cannot read the root certificate ${file}: ${(err as Error).message}; pass the PKI dir keys ca create wrote`,
    );
  }
  if (!Buffer.from(fromPem(factoryRootPem, 'CERTIFICATE')).equals(der)) {
    throw new CliError(
      `${file} is not the root CA of factory ${factory}: pass the PKI dir made for this factory (or -f the factory it belongs to)`,
    );
  }
  const key = await openRootKey(pkiDir, hsm);
  if (!publicKeysEqual(key.signer.publicKeySpki, parseCertificate(der).spki)) {
    key.close();
    throw new CliError(
      `the root key does not belong to ${file}: is this the key (or token) keys ca create used?`,
    );
  }
  return { der, signer: key.signer, close: key.close };
}

/**
 * A local device CA (fioctl's local-ca): a P-256 key the operator keeps in `<name>.key` and a
 * CA certificate (pathlen 0) the root signs, for signing device certificates on a factory line
 * without the service. CN is the file's base name, OU the factory.
 */
export async function createLocalCa(
  pkiDir: string,
  certFile: string,
  factory: string,
  root: Pick<PkiRoot, 'der' | 'signer'>,
): Promise<string> {
  const keyFile = `${certFile.replace(/\.pem$/, '')}.key`;
  for (const name of [certFile, keyFile]) {
    if (existsSync(join(pkiDir, name))) {
      throw new CliError(
        `a local device CA file ${name} already exists: name another with --local-ca-filename`,
      );
    }
  }
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  writeReadOnly(pkiDir, keyFile, privateKey.export({ format: 'pem', type: 'sec1' }).toString());
  const csr = await createCsr({
    subject: { CN: basename(certFile).replace(/\.pem$/, ''), OU: factory },
    signer: softSigner(privateKey),
  });
  const pem = toPem(
    await intermediateCaFromCsr({ csr, issuerCert: root.der, signer: root.signer }),
    'CERTIFICATE',
  );
  writeReadOnly(pkiDir, certFile, pem);
  return pem;
}

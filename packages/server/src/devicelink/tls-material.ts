import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  fromPem,
  KeyferryError,
  parseCertificate,
  selfSignedCa,
  serverCertificate,
  softSigner,
  toPem,
  verifyCertificateSignature,
} from '@keyferry/core';
import type { Config } from '../config/schema.ts';
import {
  custodyKeyRow,
  DEVICE_LINK_KEY_PURPOSES,
  type DeviceLinkKeyPurpose,
  type TlsKeyStore,
} from '../keys/custody.ts';
import type { Db } from '../storage/database.ts';

/** PEM the device-link listener presents: its certificate (chain) and key. */
export interface DeviceLinkTls {
  cert: string;
  key: string;
  /** The file a device trusts for this listener (service-ca.pem), when keyferryd made it. */
  caFile: string | undefined;
}

export const SERVICE_CA_FILE = 'service-ca.pem';
export const SERVICE_CA_KEY_FILE = 'service-ca.key';
export const DEVICE_LINK_CERT_FILE = 'device-link-tls.pem';
export const DEVICE_LINK_KEY_FILE = 'device-link-tls.key';
const SERVICE_CA_YEARS = 20;
const RENEW_BEFORE_MS = 30 * 24 * 3600 * 1000;

/** Host names of the device-link listener for a domain: every factory's subdomain, and loopback. */
export function deviceLinkNames(domain: string): string[] {
  return [`*.device-link.${domain}`, `device-link.${domain}`, 'localhost'];
}

/**
 * Where the keys of the material keyferryd makes itself are kept (`deviceLink.tlsKeys`):
 * `files`, PEM files 0600 in the data dir; `custody`, the TLS key store (soft custody wrapped
 * by the master key, also beside pkcs11 custody), in the database. The certificates are files
 * either way: devices are given service-ca.pem.
 */
interface KeyHome {
  /** The private key kept for `purpose` whose public key is `spki`, if there is one. */
  find(purpose: DeviceLinkKeyPurpose, spki: Uint8Array): Promise<KeyObject | undefined>;
  make(purpose: DeviceLinkKeyPurpose): Promise<KeyObject>;
}

/** What the TLS key store needs to keep the device-link's keys in custody. */
export interface DeviceLinkKeyStore {
  db: Db;
  tlsKeys: TlsKeyStore;
}

/**
 * The listener's TLS material. A configured deployment names its files (deviceLink.tls);
 * otherwise keyferryd keeps its own service CA (`<data dir>/service-ca.pem`) and a
 * `*.device-link.<domain>` certificate it signs (`device-link-tls.pem`), remade when the
 * domain changes or expiry nears. Their keys are files beside them (`service-ca.key`,
 * `device-link-tls.key`, 0600) or, with `deviceLink.tlsKeys: custody`, in the TLS key store.
 * Not on an HSM: Node's TLS server needs the key itself.
 */
export async function deviceLinkTls(
  config: Pick<Config, 'dataDir' | 'domain' | 'deviceLink'>,
  store: DeviceLinkKeyStore | undefined,
  now = new Date(),
): Promise<DeviceLinkTls> {
  const configured = config.deviceLink.tls;
  if (configured) {
    try {
      return {
        cert: readFileSync(configured.cert, 'utf8'),
        key: readFileSync(configured.key, 'utf8'),
        caFile: undefined,
      };
    } catch (error) {
      throw new KeyferryError('config_invalid', `deviceLink.tls: cannot read ${(error as Error).message}`);
    }
  }
  const dir = config.dataDir;
  let home: KeyHome;
  if (config.deviceLink.tlsKeys === 'custody') {
    if (!store) throw new TypeError('deviceLink.tlsKeys custody needs the TLS key store');
    home = custodyHome(store);
  } else {
    home = fileHome(dir);
  }
  const ca = await serviceCa(dir, home);
  const certFile = join(dir, DEVICE_LINK_CERT_FILE);
  const names = deviceLinkNames(config.domain);
  const current = existsSync(certFile) ? readFileSync(certFile, 'utf8') : undefined;
  const kept =
    current && !stale(current, names, ca.der, now)
      ? await keyOf(home, 'device-link-tls', current)
      : undefined;
  if (kept) return { cert: current!, key: pkcs8Pem(kept), caFile: join(dir, SERVICE_CA_FILE) };
  const key = await home.make('device-link-tls');
  const der = await serverCertificate({
    issuerCert: ca.der,
    signer: ca.signer,
    publicKeySpki: new Uint8Array(createPublicKey(key).export({ format: 'der', type: 'spki' })),
    dnsNames: names,
    ipAddresses: ['127.0.0.1', '::1'],
    now,
  });
  const cert = toPem(der, 'CERTIFICATE');
  writePrivate(certFile, cert);
  return { cert, key: pkcs8Pem(key), caFile: join(dir, SERVICE_CA_FILE) };
}

async function serviceCa(dir: string, home: KeyHome) {
  const certFile = join(dir, SERVICE_CA_FILE);
  const current = existsSync(certFile) ? readFileSync(certFile, 'utf8') : undefined;
  let key = current ? await keyOf(home, 'service-ca', current) : undefined;
  if (!current || !key) {
    key = await home.make('service-ca');
    const der = await selfSignedCa({
      subject: { O: 'keyferry', CN: 'keyferry device-link service CA' },
      signer: softSigner(key),
      years: SERVICE_CA_YEARS,
      pathLen: 0,
    });
    writePrivate(certFile, toPem(der, 'CERTIFICATE'));
  }
  return { der: fromPem(readFileSync(certFile, 'utf8'), 'CERTIFICATE'), signer: softSigner(key) };
}

/** The kept key of a certificate file, or undefined when none matches it (then both are remade). */
async function keyOf(
  home: KeyHome,
  purpose: DeviceLinkKeyPurpose,
  pem: string,
): Promise<KeyObject | undefined> {
  let spki: Uint8Array;
  try {
    spki = parseCertificate(fromPem(pem, 'CERTIFICATE')).spki;
  } catch {
    return undefined;
  }
  return home.find(purpose, spki);
}

function fileHome(dir: string): KeyHome {
  const file = (purpose: DeviceLinkKeyPurpose) =>
    join(dir, purpose === 'service-ca' ? SERVICE_CA_KEY_FILE : DEVICE_LINK_KEY_FILE);
  return {
    async find(purpose, spki) {
      try {
        const key = createPrivateKey(readFileSync(file(purpose), 'utf8'));
        return sameKey(key, spki) ? key : undefined;
      } catch {
        return undefined;
      }
    },
    async make(purpose) {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      writePrivate(file(purpose), pkcs8Pem(privateKey));
      return privateKey;
    },
  };
}

function custodyHome({ db, tlsKeys }: DeviceLinkKeyStore): KeyHome {
  return {
    async find(purpose, spki) {
      const row = await db
        .selectFrom('custody_keys')
        .selectAll()
        .where('purpose', '=', DEVICE_LINK_KEY_PURPOSES[purpose])
        .where('backend', '=', tlsKeys.backend)
        .where('public_key', '=', Buffer.from(spki).toString('base64'))
        .executeTakeFirst();
      return row ? tlsKeys.tlsServerKey(row) : undefined;
    },
    async make(purpose) {
      const key = await tlsKeys.generate(DEVICE_LINK_KEY_PURPOSES[purpose]);
      const row = custodyKeyRow(key, new Date());
      await db.insertInto('custody_keys').values(row).execute();
      return tlsKeys.tlsServerKey(row);
    },
  };
}

function sameKey(key: KeyObject, spki: Uint8Array): boolean {
  return Buffer.from(createPublicKey(key).export({ format: 'der', type: 'spki' })).equals(spki);
}

function pkcs8Pem(key: KeyObject): string {
  return String(key.export({ format: 'pem', type: 'pkcs8' }));
}

function stale(pem: string, names: string[], caDer: Uint8Array, now: Date): boolean {
  try {
    const cert = parseCertificate(fromPem(pem, 'CERTIFICATE'));
    const ca = parseCertificate(caDer);
    if (!verifyCertificateSignature(cert, ca.spki)) return true;
    if (cert.notAfter.getTime() - now.getTime() < RENEW_BEFORE_MS) return true;
    return !names.every((name) => cert.dnsNames.includes(name));
  } catch {
    return true;
  }
}

function writePrivate(path: string, text: string, mode = 0o600): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

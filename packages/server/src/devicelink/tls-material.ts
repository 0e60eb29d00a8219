import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
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
 * The listener's TLS material. A configured deployment names its files (deviceLink.tls);
 * otherwise keyferryd keeps its own service CA (`<data dir>/service-ca.pem`, key
 * `service-ca.key` 0600) and a `*.device-link.<domain>` certificate it signs
 * (`device-link-tls.pem`/`.key`, 0600), remade when the domain changes or expiry nears.
 * Plain files, not key custody: Node's TLS server needs the key itself, and this CA signs
 * nothing but this listener's certificate.
 */
export async function deviceLinkTls(
  config: Pick<Config, 'dataDir' | 'domain' | 'deviceLink'>,
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
  const ca = await serviceCa(dir);
  const certFile = join(dir, DEVICE_LINK_CERT_FILE);
  const keyFile = join(dir, DEVICE_LINK_KEY_FILE);
  const names = deviceLinkNames(config.domain);
  if (
    !existsSync(certFile) ||
    !existsSync(keyFile) ||
    stale(readFileSync(certFile, 'utf8'), names, ca.der, now)
  ) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const der = await serverCertificate({
      issuerCert: ca.der,
      signer: ca.signer,
      publicKeySpki: new Uint8Array(publicKey.export({ format: 'der', type: 'spki' })),
      dnsNames: names,
      ipAddresses: ['127.0.0.1', '::1'],
      now,
    });
    writePrivate(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }).toString());
    writePrivate(certFile, toPem(der, 'CERTIFICATE'));
  }
  return {
    cert: readFileSync(certFile, 'utf8'),
    key: readFileSync(keyFile, 'utf8'),
    caFile: join(dir, SERVICE_CA_FILE),
  };
}

async function serviceCa(dir: string) {
  const certFile = join(dir, SERVICE_CA_FILE);
  const keyFile = join(dir, SERVICE_CA_KEY_FILE);
  if (!existsSync(certFile) || !existsSync(keyFile)) {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const der = await selfSignedCa({
      subject: { O: 'keyferry', CN: 'keyferry device-link service CA' },
      signer: softSigner(privateKey),
      years: SERVICE_CA_YEARS,
      pathLen: 0,
    });
    writePrivate(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }).toString());
    writePrivate(certFile, toPem(der, 'CERTIFICATE'));
  }
  const key = createPrivateKey(readFileSync(keyFile, 'utf8'));
  return { der: fromPem(readFileSync(certFile, 'utf8'), 'CERTIFICATE'), signer: softSigner(key) };
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

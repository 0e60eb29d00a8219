import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { fromPem, selfSignedCa, serverCertificate, softSigner, toPem } from '@keyferry/core';

export const SERVER_CA_FILE = 'server-ca.pem';
const SERVER_CA_KEY_FILE = 'server-ca.key';
const SERVER_CA_SUBJECT = { O: 'keyferry-sim', CN: 'keyferry-sim AWS IoT emulator CA' };

/** The MQTT listener's TLS key and certificate chain (PEM), and the CA file devices trust. */
export interface ServerIdentity {
  readonly key: string;
  readonly cert: string;
  readonly caFile: string;
}

/**
 * Loads the emulator's own CA from `stateDir` (making it on first use: server-ca.key 0600,
 * server-ca.pem), then issues a fresh server certificate for `host` plus localhost,
 * 127.0.0.1 and ::1. Devices trust server-ca.pem as they would trust Amazon's root CA.
 */
export async function serverIdentity(stateDir: string, host: string): Promise<ServerIdentity> {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const caFile = join(stateDir, SERVER_CA_FILE);
  const keyFile = join(stateDir, SERVER_CA_KEY_FILE);
  let caKey: KeyObject;
  let caCert: Uint8Array;
  if (existsSync(caFile) && existsSync(keyFile)) {
    caKey = createPrivateKey(readFileSync(keyFile, 'utf8'));
    caCert = fromPem(readFileSync(caFile, 'utf8'), 'CERTIFICATE');
  } else {
    caKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    writeFileSync(keyFile, caKey.export({ format: 'pem', type: 'pkcs8' }).toString(), { mode: 0o600 });
    caCert = await selfSignedCa({ subject: SERVER_CA_SUBJECT, signer: softSigner(caKey), years: 10 });
    const tmp = `${caFile}.${process.pid}.tmp`;
    writeFileSync(tmp, toPem(caCert, 'CERTIFICATE'), { mode: 0o644 });
    renameSync(tmp, caFile);
  }
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const dnsNames = ['localhost', ...(isIP(host) === 0 && host !== 'localhost' ? [host] : [])];
  const ipAddresses = [
    '127.0.0.1',
    '::1',
    ...(isIP(host) !== 0 && host !== '127.0.0.1' && host !== '::1' ? [host] : []),
  ];
  const der = await serverCertificate({
    issuerCert: caCert,
    signer: softSigner(caKey),
    publicKeySpki: new Uint8Array(publicKey.export({ format: 'der', type: 'spki' })),
    dnsNames,
    ipAddresses,
    validity: { days: 30 },
  });
  return {
    key: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    cert: toPem(der, 'CERTIFICATE') + toPem(caCert, 'CERTIFICATE'),
    caFile,
  };
}

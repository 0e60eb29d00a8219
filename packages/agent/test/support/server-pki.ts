import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { selfSignedCa, serverCertificate, softSigner, toPem } from '@keyferry/core';

/** A CA and a TLS server certificate it signed, PEM, for test servers on loopback. */
export interface ServerPki {
  readonly caPem: string;
  readonly keyPem: string;
  readonly certPem: string;
}

export async function serverPki(dnsNames: readonly string[]): Promise<ServerPki> {
  const ca = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const caCert = await selfSignedCa({ subject: { CN: 'test server CA' }, years: 1, signer: softSigner(ca) });
  const key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const cert = await serverCertificate({
    issuerCert: caCert,
    signer: softSigner(ca),
    publicKeySpki: createPublicKey(key).export({ format: 'der', type: 'spki' }),
    dnsNames,
  });
  return {
    caPem: toPem(caCert, 'CERTIFICATE'),
    keyPem: key.export({ format: 'pem', type: 'pkcs8' }).toString(),
    certPem: toPem(cert, 'CERTIFICATE'),
  };
}

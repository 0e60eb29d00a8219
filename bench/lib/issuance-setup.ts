/**
 * What the issuance benches share: a timed loop, a factory root + issuing CA + device template
 * made in-process, and a pool of device ids and keys (so no case benefits from caching one input).
 */
import { generateKeyPairSync } from 'node:crypto';
import {
  createCsr,
  type DeviceId,
  deviceCertificateTemplate,
  deviceIdFromUid,
  factoryRootProfile,
  intermediateCaFromCsr,
  type Signer,
  softSigner,
} from '@keyferry/core';

export const newSigner = (): Signer =>
  softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);

/**
 * Runs `once` for `seconds` after a 300 ms warm-up; returns operations per second and the CPU
 * (this process, `process.cpuUsage`) each took.
 * Batches of 50 keep the clock out of the measured work.
 */
export async function measure(
  seconds: number,
  once: (i: number) => Promise<unknown> | unknown,
): Promise<{ perSecond: number; cpuMsEach: number }> {
  const warmUntil = performance.now() + 300;
  for (let i = 0; performance.now() < warmUntil; i++) await once(i);
  let count = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const end = start + seconds * 1000;
  while (performance.now() < end) {
    for (let j = 0; j < 50; j++) await once(count++);
  }
  const perSecond = count / ((performance.now() - start) / 1000);
  const cpu = process.cpuUsage(cpu0);
  return { perSecond, cpuMsEach: (cpu.user + cpu.system) / 1000 / count };
}

export interface IssuanceSetup {
  rootSigner: Signer;
  caSigner: Signer;
  root: Uint8Array;
  issuerCert: Uint8Array;
  template: ReturnType<typeof deviceCertificateTemplate>;
  devices: { deviceId: DeviceId; publicKeySpki: Uint8Array }[];
}

/** A factory root, its issuing CA for `factory` and the CA's device template; `pool` device ids/keys. */
export async function issuanceSetup(factory = 'bench', pool = 64): Promise<IssuanceSetup> {
  const rootSigner = newSigner();
  const caSigner = newSigner();
  const root = await factoryRootProfile({ factory, signer: rootSigner });
  const csr = await createCsr({ subject: { CN: 'fio-device-gateway-ca', O: factory }, signer: caSigner });
  const issuerCert = await intermediateCaFromCsr({ csr, issuerCert: root, signer: rootSigner });
  const template = deviceCertificateTemplate({ issuerCert, factory });
  const devices = Array.from({ length: pool }, (_, i) => {
    const uid = new Uint8Array(18);
    uid[0] = 0x04;
    uid[16] = i >> 8;
    uid[17] = i & 0xff;
    return { deviceId: deviceIdFromUid(uid), publicKeySpki: newSigner().publicKeySpki };
  });
  return { rootSigner, caSigner, root, issuerCert, template, devices };
}

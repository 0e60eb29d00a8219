/**
 * Device-certificate issuance, fast path against generic path against the raw signature
 * that both must pay (DESIGN §11). Run: `npx tsx bench/issuance.ts [seconds per case]`.
 * One process, one core: each case runs for the same time after a warm-up.
 */
import { generateKeyPairSync, sign } from 'node:crypto';
import {
  createCsr,
  deviceCertificate,
  deviceCertificateGeneric,
  deviceCertificateTemplate,
  deviceIdFromUid,
  factoryRootProfile,
  intermediateCaFromCsr,
  softSigner,
} from '@keyferry/core';

const seconds = Number(process.argv[2] ?? 2);
if (!(seconds > 0)) throw new TypeError('usage: npx tsx bench/issuance.ts [seconds per case]');

const newSigner = () => softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
const rootSigner = newSigner();
const caSigner = newSigner();
const root = await factoryRootProfile({ factory: 'bench', signer: rootSigner });
const csr = await createCsr({ subject: { CN: 'fio-device-gateway-ca', O: 'bench' }, signer: caSigner });
const issuerCert = await intermediateCaFromCsr({ csr, issuerCert: root, signer: rootSigner });
const template = deviceCertificateTemplate({ issuerCert, factory: 'bench' });

// A pool of device keys and ids so no case can benefit from caching one input.
const devices = Array.from({ length: 64 }, (_, i) => {
  const uid = new Uint8Array(18);
  uid[0] = 0x04;
  uid[17] = i;
  return { deviceId: deviceIdFromUid(uid), publicKeySpki: newSigner().publicKeySpki };
});
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const tbsSized = new Uint8Array(400);

async function measure(name: string, once: (i: number) => Promise<unknown> | unknown): Promise<number> {
  const warmUntil = performance.now() + 300;
  for (let i = 0; performance.now() < warmUntil; i++) await once(i);
  let count = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  while (performance.now() < end) {
    // Batches keep the clock out of the measured work.
    for (let j = 0; j < 50; j++) await once(count++);
  }
  const rate = count / ((performance.now() - start) / 1000);
  console.log(
    `${name.padEnd(42)} ${rate.toFixed(0).padStart(8)} /s  ${(1e6 / rate).toFixed(1).padStart(8)} µs each`,
  );
  return rate;
}

console.log(`node ${process.version}, ${seconds} s per case\n`);
const raw = await measure('raw P-256 signature (node:crypto)', () =>
  sign('sha256', tbsSized, { key: privateKey, dsaEncoding: 'der' }),
);
const fast = await measure('device certificate, template (fast) path', (i) =>
  deviceCertificate({ template, signer: caSigner, ...devices[i % devices.length]! }),
);
const generic = await measure('device certificate, generic ASN.1 path', (i) =>
  deviceCertificateGeneric({
    issuerCert,
    factory: 'bench',
    signer: caSigner,
    ...devices[i % devices.length]!,
  }),
);
console.log('');
console.log(`fast / generic:        ${(fast / generic).toFixed(1)}x`);
console.log(`fast / raw signature:  ${((fast / raw) * 100).toFixed(0)}% of the signing ceiling`);
console.log(
  `encoding cost (fast):  ${(1e6 / fast - 1e6 / raw).toFixed(1)} µs per certificate beyond the signature`,
);

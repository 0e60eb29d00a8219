/**
 * Device-certificate issuance, fast path against generic path against the raw signature
 * that both must pay (docs/performance.md). Run: `npx tsx bench/issuance.ts [--seconds S]`.
 * One process, one core: each case runs for the same time after a warm-up.
 */
import { generateKeyPairSync, sign } from 'node:crypto';
import {
  createCsr,
  deviceCertificate,
  deviceCertificateGeneric,
  parseAndVerifyCsr,
  verifyCsr,
} from '@keyferry/core';
import { parseCsrReference } from '../packages/core/src/x509/csr-reference.ts';
import { issuanceSetup, newSigner, measure as timed } from './lib/issuance-setup.ts';
import { benchOptions, positiveNumber } from './lib/options.ts';

const options = benchOptions(
  'Usage: npx tsx bench/issuance.ts [options]\n\nIn one process: the fast certificate encoders against the generic ones and the raw signature,\nand the CSR readers; each case for the same time after a warm-up.',
  {
    seconds: { value: 'S', default: '2', help: 'seconds each case runs', check: positiveNumber },
  },
);
const seconds = Number(options.seconds);

const { caSigner, issuerCert, template, devices } = await issuanceSetup();
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const tbsSized = new Uint8Array(400);
const csrs = await Promise.all(
  Array.from({ length: 64 }, (_, i) =>
    createCsr({
      subject: { O: 'bench', CN: `device-${i}` },
      dnsNames: [`d${i}.example`],
      signer: newSigner(),
    }),
  ),
);

async function measure(name: string, once: (i: number) => Promise<unknown> | unknown): Promise<number> {
  const rate = (await timed(seconds, once)).perSecond;
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
const csrFast = await measure('CSR parse+verify (direct DER)', (i) =>
  parseAndVerifyCsr(csrs[i % csrs.length]!),
);
const csrReference = await measure('CSR parse+verify (ASN.1 library reference)', (i) =>
  verifyCsr(parseCsrReference(csrs[i % csrs.length]!)),
);
console.log('');
console.log(`CSR direct / reference: ${(csrFast / csrReference).toFixed(1)}x`);
console.log(`fast / generic:        ${(fast / generic).toFixed(1)}x`);
console.log(`fast / raw signature:  ${((fast / raw) * 100).toFixed(0)}% of the signing ceiling`);
console.log(
  `encoding cost (fast):  ${(1e6 / fast - 1e6 / raw).toFixed(1)} µs per certificate beyond the signature`,
);

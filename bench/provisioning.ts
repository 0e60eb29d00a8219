/**
 * `npm run bench` (DESIGN §11): in one run on this machine, provisioned devices/s and enrollment
 * latency through the real device-link, beside the raw P-256 ceiling (node:crypto, one core)
 * and, for issuance alone, a peer CA (cfssl) against keyferry's fast and generic paths on the
 * same CSRs. Options: --devices N (500) --concurrency N (32) --csrs N (2000) --seconds S (1,
 * per in-process case) --no-peer (skip cfssl).
 */
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  createCsr,
  deviceCertificate,
  deviceCertificateGeneric,
  parseAndVerifyCsr,
  toPem,
} from '@keyferry/core';
import { cfsslSignRate, cfsslVersion, ensureCfssl } from './lib/cfssl-peer.ts';
import { deviceLinkLoad } from './lib/device-link-load.ts';
import { issuanceSetup, measure, newSigner } from './lib/issuance-setup.ts';

const { values } = parseArgs({
  options: {
    devices: { type: 'string', default: '500' },
    concurrency: { type: 'string', default: '32' },
    csrs: { type: 'string', default: '2000' },
    seconds: { type: 'string', default: '1' },
    'no-peer': { type: 'boolean', default: false },
  },
});
const count = (name: 'devices' | 'concurrency' | 'csrs') => {
  const n = Number(values[name]);
  if (!(Number.isInteger(n) && n > 0))
    throw new TypeError(`--${name} takes a positive integer, not ${values[name]}`);
  return n;
};
const devices = count('devices');
const concurrency = count('concurrency');
const csrCount = count('csrs');
const seconds = Number(values.seconds);
if (!(seconds > 0)) throw new TypeError(`--seconds takes a positive number, not ${values.seconds}`);

// Throughput anchors of REFERENCE.md.
const AZURE_DPS_PER_S = 1000 / 60;
const AWS_REGISTER_THING_PER_S = 10;

const work = mkdtempSync(join(tmpdir(), 'keyferry-bench-'));
const rows: [string, string, string][] = [];
const fmt = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
const ratio = (a: number, b: number) => `${(a / b).toFixed(a / b >= 10 ? 0 : 2)}x`;
try {
  console.log(`keyferry provisioning bench — node ${process.version}, ${devices} devices, ${csrCount} CSRs`);

  // (a) the raw crypto ceiling, one core
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const tbs = new Uint8Array(400);
  const sig = sign('sha256', tbs, { key: privateKey, dsaEncoding: 'der' });
  const signRate = await measure(seconds, () => sign('sha256', tbs, { key: privateKey, dsaEncoding: 'der' }));
  const verifyRate = await measure(seconds, () =>
    verify('sha256', tbs, { key: publicKey, dsaEncoding: 'der' }, sig),
  );
  const enrollCeiling = 1 / (2 / verifyRate + 1 / signRate);
  rows.push(['P-256 sign (node:crypto, 1 core)', `${fmt(signRate)} /s`, '']);
  rows.push(['P-256 verify (node:crypto, 1 core)', `${fmt(verifyRate)} /s`, '']);
  rows.push(['ceiling: 1 enrollment = 2 verify + 1 sign', `${fmt(enrollCeiling)} /s`, '']);

  // (b) issuance alone on the same CSRs: keyferry fast path, generic path, cfssl
  const setup = await issuanceSetup();
  const csrs = await Promise.all(
    Array.from({ length: csrCount }, () => createCsr({ subject: { CN: 'device' }, signer: newSigner() })),
  );
  const issue = (generic: boolean) => (i: number) => {
    const csr = parseAndVerifyCsr(csrs[i % csrs.length]!);
    const device = {
      deviceId: setup.devices[i % setup.devices.length]!.deviceId,
      publicKeySpki: csr.publicKeySpki,
    };
    return generic
      ? deviceCertificateGeneric({
          issuerCert: setup.issuerCert,
          factory: 'bench',
          signer: setup.caSigner,
          ...device,
        })
      : deviceCertificate({ template: setup.template, signer: setup.caSigner, ...device });
  };
  const templateOnly = await measure(seconds, (i) =>
    deviceCertificate({
      template: setup.template,
      signer: setup.caSigner,
      ...setup.devices[i % setup.devices.length]!,
    }),
  );
  const fast = await measure(seconds, issue(false));
  const generic = await measure(seconds, issue(true));
  let peer: number | undefined;
  let peerNote = 'skipped (--no-peer)';
  if (!values['no-peer']) {
    const found = ensureCfssl();
    if ('skipped' in found) peerNote = `skipped: ${found.skipped}`;
    else {
      const pems = csrs.map((der) => toPem(der, 'CERTIFICATE REQUEST'));
      peer = await cfsslSignRate(found.bin, work, pems, 16);
      peerNote = `cfssl ${cfsslVersion(found.bin)} serve, GOMAXPROCS=1, HTTP loopback, 16 in flight`;
    }
  }
  const vsPeer = (rate: number) => (peer === undefined ? 'vs cfssl: n/a' : `vs cfssl: ${ratio(rate, peer)}`);
  const issueCeiling = 1 / (1 / verifyRate + 1 / signRate); // CSR verify + one signature
  rows.push([
    'issue: keyferry fast (CSR verify + template)',
    `${fmt(fast)} /s`,
    `${vsPeer(fast)}; ${((fast / issueCeiling) * 100).toFixed(0)}% of verify+sign ceiling (${fmt(issueCeiling)}/s)`,
  ]);
  rows.push([
    'issue: keyferry template only (no CSR)',
    `${fmt(templateOnly)} /s`,
    `${((templateOnly / signRate) * 100).toFixed(0)}% of the raw signature rate`,
  ]);
  rows.push([
    'issue: keyferry generic ASN.1 path',
    `${fmt(generic)} /s`,
    `${vsPeer(generic)}; fast is ${ratio(fast, generic)}`,
  ]);
  rows.push(['issue: cfssl (peer CA)', peer === undefined ? 'n/a' : `${fmt(peer)} /s`, peerNote]);

  // the real device-link
  const load = await deviceLinkLoad(join(work, 'data'), devices, concurrency);
  const p = (x: { p50: number; p90: number; p99: number }) =>
    `${x.p50.toFixed(1)} / ${x.p90.toFixed(1)} / ${x.p99.toFixed(1)} ms`;
  rows.push([
    `device-link: provisioned devices (${load.concurrency} in flight)`,
    `${fmt(load.devicesPerSecond)} /s`,
    `${((load.devicesPerSecond / enrollCeiling) * 100).toFixed(1)}% of ceiling; Azure DPS unit ${ratio(load.devicesPerSecond, AZURE_DPS_PER_S)}; AWS RegisterThing ${ratio(load.devicesPerSecond, AWS_REGISTER_THING_PER_S)}`,
  ]);
  rows.push([
    'device-link: per device p50/p90/p99',
    p(load.device),
    'TLS handshake + manifest + enroll + report',
  ]);
  rows.push([
    'device-link: simpleenroll p50/p90/p99',
    p(load.enroll),
    `${load.devices} devices in ${load.seconds.toFixed(1)} s`,
  ]);

  const widths = [0, 1, 2].map((c) =>
    Math.max(...[['MEASURE', 'FIGURE', 'COMPARISON'], ...rows].map((r) => r[c]!.length)),
  );
  const line = (r: string[]) =>
    r
      .map((cell, c) => (c < 2 ? cell.padEnd(widths[c]!) : cell))
      .join('  ')
      .trimEnd();
  console.log('');
  console.log(line(['MEASURE', 'FIGURE', 'COMPARISON']));
  for (const r of rows) console.log(line(r));
  console.log(
    `\nanchors (REFERENCE.md): Azure DPS ${fmt(AZURE_DPS_PER_S)}/s per unit, AWS RegisterThing ~${AWS_REGISTER_THING_PER_S}/s`,
  );
} finally {
  rmSync(work, { recursive: true, force: true });
}

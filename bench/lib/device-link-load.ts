/**
 * Provisioning through the real device-link: a real keyferryd process (SQLite, port-0
 * listeners, real TLS on loopback), N simulated SE05x identities signed by keyferry-sim's
 * vendor CA code, allow-listed over the management API, then each device — with bounded
 * concurrency — opens one TLS connection with its identity and does manifest → EST
 * simpleenroll → report, as the agent does.
 */
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { join } from 'node:path';
import { createCsr, softSigner, toPem } from '@keyferry/core';
import { identityCertificate, loadOrCreateVendorCa, randomUid } from '@keyferry/sim';
import { setupDeviceGateway } from '../../test/support/device-link.ts';
import { startKeyferryd } from '../../test/support/processes.ts';

const SE050 = '935389312472';
const OBJECT = 'fio-device-gateway-ca';

export interface LoadResult {
  devices: number;
  concurrency: number;
  seconds: number;
  devicesPerSecond: number;
  /** Whole provisioning of one device (TLS handshake, manifest, enroll, report), ms. */
  device: Percentiles;
  /** The EST simpleenroll request alone, ms. */
  enroll: Percentiles;
}
export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
}

interface SimDevice {
  hex: string;
  key: string;
  cert: string;
  csrBase64: string;
}

function percentiles(ms: number[]): Percentiles {
  const s = [...ms].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] ?? Number.NaN;
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99) };
}

async function api(base: string, token: string, method: string, path: string, body?: unknown) {
  const res = await fetch(base + path, {
    method,
    headers: { 'osf-token': token, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${await res.text()}`);
  return res.json() as Promise<{ subdomain: string }>;
}

function call(agent: Agent, host: string, method: string, path: string, body?: string) {
  const headers: Record<string, string> =
    body === undefined
      ? {}
      : path.endsWith('/report')
        ? { 'content-type': 'application/json' }
        : { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' };
  return new Promise<string>((resolve, reject) => {
    const req = request({ agent, method, path, headers, servername: host }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200)
          reject(new Error(`${method} ${path} answered ${res.statusCode}: ${text}`));
        else resolve(text);
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function makeDevices(dataDir: string, n: number): Promise<SimDevice[]> {
  const vendor = await loadOrCreateVendorCa(join(dataDir, 'sim'));
  const out: SimDevice[] = [];
  for (let i = 0; i < n; i++) {
    const identity = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const uid = randomUid();
    const der = await identityCertificate({
      vendor,
      uid,
      product: SE050,
      publicKeySpki: new Uint8Array(identity.publicKey.export({ format: 'der', type: 'spki' })),
    });
    // the gateway key the device generates in its SE, and its CSR (device-side work, made up front)
    const csr = await createCsr({
      subject: { CN: 'device' },
      signer: softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey),
    });
    out.push({
      hex: uid.hex,
      key: identity.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
      cert: toPem(der, 'CERTIFICATE'),
      csrBase64: Buffer.from(csr).toString('base64'),
    });
  }
  return out;
}

/** Runs the load against a fresh keyferryd in `dataDir`; stops the daemon before it returns. */
export async function deviceLinkLoad(dataDir: string, n: number, concurrency: number): Promise<LoadResult> {
  const devices = await makeDevices(dataDir, n);
  const daemon = await startKeyferryd(dataDir);
  try {
    const base = daemon.listen.api;
    const token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
    await setupDeviceGateway(base, token);
    const prefix = '/ota/factories/demo/el2g';
    for (let i = 0; i < devices.length; i += 1000) {
      const ids = devices.slice(i, i + 1000).map((d) => `0x${d.hex}`);
      await api(base, token, 'POST', `${prefix}/devices/`, { 'product-id': SE050, devices: ids });
    }
    // the overview's subdomain is the whole device-link host name, as `el2g status` prints it
    const host = (await api(base, token, 'GET', `${prefix}/overview/`)).subdomain;
    const [address, port] = daemon.listen.deviceLink!.split(':');
    const ca = readFileSync(join(dataDir, 'service-ca.pem'), 'utf8');

    const deviceMs: number[] = [];
    const enrollMs: number[] = [];
    const report = JSON.stringify({ results: [{ name: OBJECT, status: 'SUCCESS' }] });
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < devices.length; i = next++) {
        const d = devices[i]!;
        // one keep-alive connection per device: one TLS handshake for its three requests
        const agent = new Agent({
          host: address,
          port: Number(port),
          ca,
          key: d.key,
          cert: d.cert,
          keepAlive: true,
          maxSockets: 1,
        });
        const t0 = performance.now();
        await call(agent, host, 'GET', '/device-link/v1/manifest');
        const t1 = performance.now();
        await call(agent, host, 'POST', `/.well-known/est/${OBJECT}/simpleenroll`, d.csrBase64);
        enrollMs.push(performance.now() - t1);
        await call(agent, host, 'POST', '/device-link/v1/report', report);
        deviceMs.push(performance.now() - t0);
        agent.destroy();
      }
    };
    const start = performance.now();
    await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
    const seconds = (performance.now() - start) / 1000;
    return {
      devices: n,
      concurrency: Math.min(concurrency, n),
      seconds,
      devicesPerSecond: n / seconds,
      device: percentiles(deviceMs),
      enroll: percentiles(enrollMs),
    };
  } finally {
    await daemon.stop();
  }
}

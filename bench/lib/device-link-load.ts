/**
 * Provisioning through the real device-link: a real keyferryd process (port-0 listeners, real
 * TLS on loopback, SQLite or PostgreSQL), N simulated SE05x identities signed by keyferry-sim's
 * vendor CA code and allow-listed over the management API; each device opens one keep-alive
 * TLS connection with its identity and does manifest → EST simpleenroll → report, as the agent
 * does. Everything a device brings (keys, identity certificate, CSR, TLS context) is made
 * before the clock starts.
 */
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { join } from 'node:path';
import { createSecureContext, type SecureContext } from 'node:tls';
import { createCsr, softSigner, toPem } from '@keyferry/core';
import { identityCertificate, loadOrCreateVendorCa, randomUid } from '@keyferry/sim';
import { setupDeviceGateway } from '../../test/support/device-link.ts';
import { type DaemonProcess, startKeyferryd } from '../../test/support/processes.ts';
import { Failures, runPool, send } from './keep-alive-client.ts';
import { ownCpuMs, pin, processTree, treeCpuMs } from './process-stats.ts';

const SE050 = '935389312472';
export const GATEWAY_OBJECT = 'fio-device-gateway-ca';
const ALLOWLIST_BATCH = 1000;
const REPORT = JSON.stringify({ results: [{ name: GATEWAY_OBJECT, status: 'SUCCESS' }] });

export interface SimDevice {
  hex: string;
  secureContext: SecureContext;
  csrDer: Uint8Array;
}

export interface Fleet {
  daemon: DaemonProcess;
  pid: number;
  /** keyferryd's processes: the primary and, with workers > 1, its workers. */
  pids: number[];
  /** The factory's device-link host name (SNI). */
  host: string;
  address: string;
  port: number;
  serviceCa: string;
  dataDir: string;
  api: (method: string, path: string, body?: unknown) => Promise<unknown>;
}

/** Starts keyferryd in `dataDir` (pinned to `core`), with the device gateway CA set up. */
export async function startFleet(
  dataDir: string,
  options: { storageUrl?: string; core?: number; workers?: number; args?: string[] },
): Promise<Fleet> {
  const daemon = await startKeyferryd(dataDir, {
    ...(options.args ? { args: options.args } : {}),
    env: {
      KEYFERRY_WORKERS: String(options.workers ?? 1),
      ...(options.storageUrl ? { KEYFERRY_STORAGE_URL: options.storageUrl } : {}),
    },
  });
  const pid = daemon.child.pid!;
  const pids = processTree(pid);
  for (const p of pids) pin(p, options.core);
  const base = daemon.listen.api;
  const token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(base + path, {
      method,
      headers: { 'osf-token': token, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${await res.text()}`);
    return res.json();
  };
  await setupDeviceGateway(base, token);
  // the overview's subdomain is the whole device-link host name, as `el2g status` prints it
  const { subdomain } = (await api('GET', '/ota/factories/demo/el2g/overview/')) as { subdomain: string };
  const link = daemon.listen.deviceLink!;
  return {
    daemon,
    pid,
    pids,
    host: subdomain,
    address: link.slice(0, link.lastIndexOf(':')),
    port: Number(link.slice(link.lastIndexOf(':') + 1)),
    serviceCa: readFileSync(join(dataDir, 'service-ca.pem'), 'utf8'),
    dataDir,
    api,
  };
}

/** Makes `n` devices (identity, gateway key CSR, TLS context) and allow-lists them. */
export async function makeDevices(fleet: Fleet, n: number): Promise<SimDevice[]> {
  const vendor = await loadOrCreateVendorCa(join(fleet.dataDir, 'sim'));
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
    // the gateway key the device generates in its SE, and its CSR (device-side work)
    const csrDer = await createCsr({
      subject: { CN: 'device' },
      signer: softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey),
    });
    out.push({
      hex: uid.hex,
      secureContext: createSecureContext({
        ca: fleet.serviceCa,
        key: identity.privateKey.export({ format: 'pem', type: 'pkcs8' }),
        cert: toPem(der, 'CERTIFICATE'),
      }),
      csrDer,
    });
  }
  for (let i = 0; i < out.length; i += ALLOWLIST_BATCH) {
    const ids = out.slice(i, i + ALLOWLIST_BATCH).map((d) => `0x${d.hex}`);
    await fleet.api('POST', '/ota/factories/demo/el2g/devices/', { 'product-id': SE050, devices: ids });
  }
  return out;
}

/** One device's keep-alive connection (its TLS handshake happens on the first request). */
export function deviceAgent(fleet: Fleet, device: SimDevice): Agent {
  return new Agent({
    host: fleet.address,
    port: fleet.port,
    secureContext: device.secureContext,
    keepAlive: true,
    maxSockets: 1,
  });
}

export const manifest = (fleet: Fleet, agent: Agent) =>
  send({ agent, tls: true, servername: fleet.host, method: 'GET', path: '/device-link/v1/manifest' });

export const simpleenroll = (fleet: Fleet, agent: Agent, device: SimDevice) =>
  send({
    agent,
    tls: true,
    servername: fleet.host,
    method: 'POST',
    path: `/.well-known/est/${GATEWAY_OBJECT}/simpleenroll`,
    headers: { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' },
    body: Buffer.from(device.csrDer).toString('base64'),
  });

const report = (fleet: Fleet, agent: Agent) =>
  send({
    agent,
    tls: true,
    servername: fleet.host,
    method: 'POST',
    path: '/device-link/v1/report',
    headers: { 'content-type': 'application/json' },
    body: REPORT,
  });

export interface LoadRun {
  provisioned: number;
  failures: Failures;
  seconds: number;
  /** Per provisioned device: TLS handshake + manifest + enroll + report, ms. */
  deviceMs: number[];
  serverCpuMs: number;
  clientCpuMs: number;
}

/** Provisions every device, `concurrency` in flight; failed devices are counted, not fatal. */
export async function provision(
  fleet: Fleet,
  devices: readonly SimDevice[],
  concurrency: number,
  progress?: (done: number) => void,
): Promise<LoadRun> {
  const deviceMs: number[] = [];
  const failures = new Failures();
  const server0 = treeCpuMs(fleet.pids);
  const client0 = ownCpuMs();
  const start = performance.now();
  await runPool(
    devices.length,
    concurrency,
    async (i) => {
      const d = devices[i]!;
      const agent = deviceAgent(fleet, d);
      try {
        const t0 = performance.now();
        await manifest(fleet, agent);
        await simpleenroll(fleet, agent, d);
        await report(fleet, agent);
        deviceMs.push(performance.now() - t0);
      } finally {
        agent.destroy();
      }
    },
    failures,
    progress,
  );
  const seconds = (performance.now() - start) / 1000;
  return {
    provisioned: deviceMs.length,
    failures,
    seconds,
    deviceMs,
    serverCpuMs: treeCpuMs(fleet.pids) - server0,
    clientCpuMs: ownCpuMs() - client0,
  };
}

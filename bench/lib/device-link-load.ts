/**
 * Provisioning through the real device-link: a real keyferryd process (port-0 listeners, real
 * TLS on loopback, SQLite or PostgreSQL), N simulated SE05x identities signed by keyferry-sim's
 * vendor CA code and allow-listed over the management API; each device opens one keep-alive
 * TLS connection with its identity and does manifest → EST simpleenroll → report, as the agent
 * does. Everything a device brings (keys, identity certificate, CSR, TLS context) is made
 * before the clock starts.
 */
import { generateKeyPairSync } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { createSecureContext, type SecureContext } from 'node:tls';
import { createCsr, softSigner, toPem } from '@keyferry/core';
import { identityCertificate, loadOrCreateVendorCa, randomUid } from '@keyferry/sim';
import { setupDeviceGateway } from '../../test/support/device-link.ts';
import { type DaemonProcess, startKeyferryd } from '../../test/support/processes.ts';
import {
  type Call,
  Failures,
  PinnedAgent,
  pinnedServerCertificate,
  runPool,
  send,
} from './keep-alive-client.ts';
import { ownCpuMs, pin, processTree, treeCpuFromNow, treeCpuMs } from './process-stats.ts';

const SE050 = '935389312472';
export const GATEWAY_OBJECT = 'fio-device-gateway-ca';
const ALLOWLIST_BATCH = 1000;
/** The report body a device sends after storing its certificate. */
export const REPORT = JSON.stringify({ results: [{ name: GATEWAY_OBJECT, status: 'SUCCESS' }] });

export interface SimDevice {
  hex: string;
  secureContext: SecureContext;
  csrDer: Uint8Array;
}

/** One keyferryd of the fleet: its process, its workers, its device-link address. */
export interface FleetNode {
  daemon: DaemonProcess;
  pid: number;
  /** The primary and, with workers > 1, its workers. */
  pids: number[];
  address: string;
  port: number;
  dataDir: string;
  /** The device-link certificate this node serves, checked once (deviceLinkPin). */
  serverCertificate: Buffer;
}

export interface Fleet {
  /** The first node's keyferryd (it made the schema, the demo factory and the service CA). */
  daemon: DaemonProcess;
  pid: number;
  /** Every keyferryd process of every node: the server CPU is summed over them. */
  pids: number[];
  /** The factory's device-link host name (SNI). */
  host: string;
  address: string;
  port: number;
  /** The keyferryd nodes on one database (one unless `nodes` says more); devices alternate. */
  nodes: FleetNode[];
  dataDir: string;
  api: (method: string, path: string, body?: unknown) => Promise<unknown>;
  /** Stops every node. */
  stop(): Promise<void>;
}

/**
 * Starts keyferryd in `dataDir` (pinned to `core`), with the device gateway CA set up. With
 * `nodes` > 1 (PostgreSQL only) more keyferryd join the first on the same database, each with
 * its own data dir, the first's master key and its device-link service CA, as a deployment of
 * several nodes does (docs/deployment.md).
 */
export async function startFleet(
  dataDir: string,
  options: {
    storageUrl?: string;
    core?: number;
    workers?: number;
    nodes?: number;
    args?: string[];
    /** Node options for every keyferryd (the bench's --cpu-prof). */
    nodeArgs?: string[];
  },
): Promise<Fleet> {
  const count = options.nodes ?? 1;
  if (count > 1 && !options.storageUrl) throw new Error('several nodes need PostgreSQL (storageUrl)');
  const env = {
    KEYFERRY_WORKERS: String(options.workers ?? 1),
    ...(options.storageUrl ? { KEYFERRY_STORAGE_URL: options.storageUrl } : {}),
  };
  const start = { args: options.args ?? [], nodeArgs: options.nodeArgs ?? [] };
  const first = await startNode(dataDir, env, options.core, start);
  const nodes = [first];
  try {
    // the devices' vendor CA (makeDevices), trusted by every node: each reads its data dir's
    if (count > 1) await loadOrCreateVendorCa(join(dataDir, 'sim'));
    for (let k = 2; k <= count; k++) {
      const own = `${dataDir}-node${k}`;
      mkdirSync(join(own, 'sim'), { recursive: true, mode: 0o700 });
      for (const file of ['service-ca.pem', 'service-ca.key', join('sim', 'vendor-ca.pem')]) {
        if (existsSync(join(dataDir, file))) copyFileSync(join(dataDir, file), join(own, file));
      }
      const shared = { ...env, KEYFERRY_MASTER_KEY_FILE: join(dataDir, 'master.key') };
      nodes.push(await startNode(own, shared, options.core, start));
    }
  } catch (error) {
    await Promise.all(nodes.map((n) => n.daemon.stop()));
    throw error;
  }
  const base = first.daemon.listen.api;
  const token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
  const api = (method: string, path: string, body?: unknown) => apiCall(base, token, method, path, body);
  await setupDeviceGateway(base, token);
  // the overview's subdomain is the whole device-link host name, as `el2g status` prints it
  const { subdomain } = (await api('GET', '/ota/factories/demo/el2g/overview/')) as { subdomain: string };
  for (const node of nodes) node.serverCertificate = deviceLinkPin(node.dataDir, subdomain);
  return {
    daemon: first.daemon,
    pid: first.pid,
    pids: nodes.flatMap((n) => n.pids),
    host: subdomain,
    address: first.address,
    port: first.port,
    nodes,
    dataDir,
    api,
    async stop() {
      await Promise.all(nodes.map((n) => n.daemon.stop()));
    },
  };
}

async function startNode(
  dataDir: string,
  env: NodeJS.ProcessEnv,
  core: number | undefined,
  start: { args: string[]; nodeArgs: string[] },
): Promise<FleetNode> {
  const daemon = await startKeyferryd(dataDir, { env, ...start });
  const pid = daemon.child.pid!;
  const pids = processTree(pid);
  for (const p of pids) pin(p, core);
  const link = daemon.listen.deviceLink!;
  return {
    daemon,
    pid,
    pids,
    address: link.slice(0, link.lastIndexOf(':')),
    port: Number(link.slice(link.lastIndexOf(':') + 1)),
    dataDir,
    serverCertificate: Buffer.alloc(0), // set once the factory's host name is known
  };
}

/**
 * The device-link certificate of the keyferryd (or floor server) in `dataDir`, checked as a
 * device checks it (its service CA, valid, for the factory's `host`): what the load
 * generator's connections then accept (PinnedAgent).
 */
export function deviceLinkPin(dataDir: string, host: string): Buffer {
  return pinnedServerCertificate(
    join(dataDir, 'device-link-tls.pem'),
    readFileSync(join(dataDir, 'service-ca.pem'), 'utf8'),
    host,
  );
}

/**
 * One management API call on a connection of its own. Not keep-alive: making devices keeps the
 * event loop busy for longer than the API's keep-alive timeout, so a pooled connection would
 * be one the server has closed without this process having seen it yet, and the next request
 * on it fails with "other side closed".
 */
function apiCall(
  base: string,
  token: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<unknown> {
  const text = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, base),
      {
        method,
        agent: false,
        // a body-less DELETE with a JSON content type is refused (invalid_json)
        headers: {
          'osf-token': token,
          ...(text === undefined ? {} : { 'content-type': 'application/json' }),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const answer = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status < 200 || status > 299)
            reject(new Error(`${method} ${path} answered ${status}: ${answer}`));
          else resolve(answer === '' ? undefined : JSON.parse(answer));
        });
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}

/**
 * Statements the fleet's keyferryd have sent to the database so far (`keyferry_db_statements_total`
 * of each node's /metrics, which sums a node's workers). A count, so unlike CPU time it does not
 * move with the machine's load; the scrape's own few statements are in it.
 */
export async function statementsSent(fleet: Fleet): Promise<number> {
  let total = 0;
  for (const node of fleet.nodes) {
    const res = await fetch(new URL('/metrics', node.daemon.listen.api));
    const line = (await res.text()).split('\n').find((l) => l.startsWith('keyferry_db_statements_total '));
    if (!line) throw new Error(`${node.daemon.listen.api}/metrics has no keyferry_db_statements_total`);
    total += Number(line.split(' ')[1]);
  }
  return total;
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
      // no CA: the server's certificate is pinned instead (PinnedAgent)
      secureContext: createSecureContext({
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

/** One device's keep-alive connection (its TLS handshake happens on the first request) to `node`. */
export function deviceAgent(fleet: Fleet, device: SimDevice, node: FleetNode = fleet.nodes[0]!): PinnedAgent {
  return new PinnedAgent(
    {
      host: node.address,
      port: node.port,
      secureContext: device.secureContext,
      keepAlive: true,
      maxSockets: 1,
    },
    node.serverCertificate,
  );
}

/** A device's three calls, as `send` and `exchange` take them. */
export const manifestCall = (fleet: Fleet, agent: PinnedAgent): Call => ({
  agent,
  tls: true,
  servername: fleet.host,
  method: 'GET',
  path: '/device-link/v1/manifest',
});

export const enrollCall = (fleet: Fleet, agent: PinnedAgent, device: SimDevice): Call => ({
  agent,
  tls: true,
  servername: fleet.host,
  method: 'POST',
  path: `/.well-known/est/${GATEWAY_OBJECT}/simpleenroll`,
  headers: { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' },
  body: Buffer.from(device.csrDer).toString('base64'),
});

export const reportCall = (fleet: Fleet, agent: PinnedAgent): Call => ({
  agent,
  tls: true,
  servername: fleet.host,
  method: 'POST',
  path: '/device-link/v1/report',
  headers: { 'content-type': 'application/json' },
  body: REPORT,
});

export const manifest = (fleet: Fleet, agent: PinnedAgent) => send(manifestCall(fleet, agent));
export const simpleenroll = (fleet: Fleet, agent: PinnedAgent, device: SimDevice) =>
  send(enrollCall(fleet, agent, device));
export const report = (fleet: Fleet, agent: PinnedAgent) => send(reportCall(fleet, agent));

export interface LoadRun {
  provisioned: number;
  failures: Failures;
  seconds: number;
  /** Per provisioned device: TLS handshake + manifest + enroll + report, ms. */
  deviceMs: number[];
  serverCpuMs: number;
  clientCpuMs: number;
  /** The database server's processes (PostgreSQL started by the bench), when known. */
  databaseCpuMs: number | undefined;
}

/**
 * Provisions every device, `concurrency` in flight, the devices alternating between the
 * fleet's nodes; failed devices are counted, not fatal.
 */
export async function provision(
  fleet: Fleet,
  devices: readonly SimDevice[],
  concurrency: number,
  progress?: (done: number) => void,
  databasePid?: number,
): Promise<LoadRun> {
  const deviceMs: number[] = [];
  const failures = new Failures();
  const database = databasePid === undefined ? undefined : treeCpuFromNow(databasePid);
  const server0 = treeCpuMs(fleet.pids);
  const client0 = ownCpuMs();
  const start = performance.now();
  await runPool(
    devices.length,
    concurrency,
    async (i) => {
      const d = devices[i]!;
      const agent = deviceAgent(fleet, d, fleet.nodes[i % fleet.nodes.length]);
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
    databaseCpuMs: database?.stop(),
  };
}

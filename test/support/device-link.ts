import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { type Agent, request } from 'node:https';
import { join } from 'node:path';
import { factoryRootProfile, fromPem, intermediateCaFromCsr, softSigner, toPem } from '@keyferry/core';
import type { Db } from '../../packages/server/src/storage/database.ts';
import type { RunResult } from './processes.ts';

/** A factory root made in the test (the operator's offline root) and the intermediate the service holds. */
export interface GatewayPki {
  rootPem: string;
  intermediatePem: string;
}

async function api(base: string, token: string, method: string, path: string, body: unknown): Promise<any> {
  const res = await fetch(base + path, {
    method,
    headers: { 'osf-token': token, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = await res.json().catch(() => undefined);
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/**
 * What `keys ca create` + `el2g config-device-gateway` do, through the management API: a root
 * uploaded as root-crt, then the service's fio-device-gateway-ca CSR signed by it (issue 3's
 * POST/PUT el2g/device-gateway/), which creates the secure objects and assigns them.
 */
export async function setupDeviceGateway(base: string, token: string, factory = 'demo'): Promise<GatewayPki> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const signer = softSigner(privateKey);
  const root = await factoryRootProfile({ factory, signer });
  const rootPem = toPem(root, 'CERTIFICATE');
  const prefix = `/ota/factories/${factory}`;
  await api(base, token, 'PATCH', `${prefix}/certs/`, { 'root-crt': rootPem });
  const { id, value } = await api(base, token, 'POST', `${prefix}/el2g/device-gateway/`, {});
  const cert = await intermediateCaFromCsr({
    csr: fromPem(value, 'CERTIFICATE REQUEST'),
    issuerCert: root,
    signer,
  });
  const intermediatePem = toPem(cert, 'CERTIFICATE');
  await api(base, token, 'PUT', `${prefix}/el2g/device-gateway/`, {
    id,
    'root-ca': rootPem,
    'signed-cert': intermediatePem,
  });
  return { rootPem, intermediatePem };
}

/** Puts a device on a factory's allow-list (the CI group of its product) as a row, like `devices add`. */
export async function allowListDevice(
  db: Db,
  factory: string,
  deviceId: string,
  nc12: string,
): Promise<number> {
  const group = await db
    .selectFrom('device_groups')
    .innerJoin('factories', 'factories.id', 'device_groups.factory_id')
    .select(['device_groups.id', 'device_groups.factory_id'])
    .where('factories.name', '=', factory)
    .where('device_groups.name', '=', `fio-${nc12}`)
    .executeTakeFirstOrThrow();
  const row = await db
    .insertInto('devices')
    .values({
      factory_id: group.factory_id,
      device_id: deviceId,
      group_id: group.id,
      nc12,
      added_at: new Date().toISOString(),
      deleted_at: null,
      last_connection: null,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return row.id;
}

export interface DeviceLinkAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any;
  /** True when the call went over a connection an earlier call of its agent opened. */
  reusedSocket: boolean;
}

/** One HTTPS call to the device-link, as a device makes it (client certificate, SNI). */
export function deviceLinkCall(options: {
  address: string;
  ca: string;
  servername?: string;
  key?: string;
  cert?: string;
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** A keep-alive agent makes several calls on one connection; default: a connection each. */
  agent?: Agent;
}): Promise<DeviceLinkAnswer> {
  const [host, port] = [
    options.address.slice(0, options.address.lastIndexOf(':')),
    options.address.slice(options.address.lastIndexOf(':') + 1),
  ];
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host,
        port: Number(port),
        method: options.method ?? 'GET',
        path: options.path,
        ca: options.ca,
        ...(options.servername ? { servername: options.servername } : {}),
        ...(options.key ? { key: options.key, cert: options.cert } : {}),
        headers: options.headers,
        agent: options.agent ?? false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {}
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text,
            json,
            reusedSocket: req.reusedSocket,
          });
        });
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** What a test device's agent env file names: the factory, the keyferryd it reaches, its SE. */
export interface AgentEnv {
  repoId: string;
  /** `<sub>.device-link.localhost`, the SNI name (EL2GO_HOSTNAME). */
  subdomain: string;
  deviceLinkAddress: string;
  /** keyferryd's data dir: its service-ca.pem verifies the device-link. */
  dataDir: string;
  pkcs11Module: string;
  sotaDir: string;
  rootCrt: string;
  /** More `NAME=value` lines (PKCS11_PIN, SE_BACKEND, …). */
  extra?: string[];
  akliteStartCmd?: string;
}

/** Writes an /etc/default/lmp-el2go-auto-register-style file for keyferry-agent --env-file. */
export function writeAgentEnvFile(path: string, env: AgentEnv): void {
  writeFileSync(
    path,
    [
      `REPOID=${env.repoId}`,
      `EL2GO_HOSTNAME=${env.subdomain}`,
      `EL2GO_CONNECT_ADDR=${env.deviceLinkAddress}`,
      `DEVICE_LINK_CA=${join(env.dataDir, 'service-ca.pem')}`,
      `PKCS11_MODULE=${env.pkcs11Module}`,
      `SOTA_DIR=${env.sotaDir}`,
      `ROOT_CRT=${env.rootCrt}`,
      'DAEMON_INTERVAL=1',
      `AKLITE_START_CMD=${env.akliteStartCmd ?? 'true'}`,
      ...(env.extra ?? []),
      '',
    ].join('\n'),
  );
}

/** The key and certificate files a device's sota.toml names (the pair aktualizr-lite uses). */
export function sotaPair(sotaDir: string): { key: string; cert: string } {
  const toml = readFileSync(join(sotaDir, 'sota.toml'), 'utf8');
  const key = /^tls_pkey_path = "(.*)"$/m.exec(toml)?.[1];
  const cert = /^tls_clientcert_path = "(.*)"$/m.exec(toml)?.[1];
  if (key === undefined || cert === undefined) throw new Error(`no PEM pair in sota.toml:\n${toml}`);
  return { key, cert };
}

/** GET /device at the device gateway (`host:port`) with a key and certificate (PEM files). */
export function gatewayCall(options: {
  gateway: string;
  repoId: string;
  rootCrt: string;
  pair: { key: string; cert: string };
}): Promise<{ status: number; body: any }> {
  const [host, port] = options.gateway.split(':') as [string, string];
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host,
        port: Number(port),
        path: '/device',
        servername: `${options.repoId}.ota-lite.localhost`,
        ca: readFileSync(options.rootCrt),
        key: readFileSync(options.pair.key),
        cert: readFileSync(options.pair.cert),
        agent: false,
      },
      (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text || '{}') }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/**
 * The operator's one-time setup with the CLI (`cli` runs `keyferry` against the factory): the
 * factory PKI in `pki`, then the device gateway's objects.
 */
export async function setUpFactoryPki(
  cli: (args: string[]) => Promise<RunResult>,
  pki: string,
): Promise<void> {
  for (const step of [
    ['keys', 'ca', 'create', pki],
    ['el2g', 'config-device-gateway', '--pki-dir', pki],
  ]) {
    const res = await cli(step);
    if (res.status !== 0) throw new Error(`${step.join(' ')} exited ${res.status}: ${res.stderr}`);
  }
}

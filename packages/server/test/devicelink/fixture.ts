import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCsr, type DeviceId, selfSignedCa, softSigner, toPem } from '@keyferry/core';
import {
  createSecureElement,
  identityCertificate,
  loadOrCreateVendorCa,
  randomUid,
  type VendorCa,
} from '@keyferry/sim';
import {
  allowListDevice,
  type DeviceLinkAnswer,
  deviceLinkCall,
  type GatewayPki,
  setupDeviceGateway,
} from '../../../../test/support/device-link.ts';
import type { ConfigInput } from '../../src/config/schema.ts';
import type { BackendName } from '../support/databases.ts';
import { type StartTestOptions, startTestService, type TestService } from '../support/service.ts';

export const SE050 = '935389312472';
export const SE051 = '935414457472';

/** A device the test plays: its UID and the TLS key/cert it connects with. */
export interface TestDevice {
  uid: DeviceId;
  key: string;
  cert: string;
}

export interface DeviceLinkFixture {
  svc: TestService;
  pki: GatewayPki;
  vendor: VendorCa;
  /** A second vendor, trusted for SE051 only (config products[]). */
  otherVendor: VendorCa;
  serviceCa: string;
  subdomain: string;
  address: string;
  /** A soft SE made by keyferry-sim's code, allow-listed unless `allowList` is false. */
  device(options?: { allowList?: boolean; product?: string }): Promise<TestDevice>;
  call(
    device: TestDevice | undefined,
    options: Partial<Parameters<typeof deviceLinkCall>[0]> & { path: string },
  ): Promise<DeviceLinkAnswer>;
  count(table: 'certificates' | 'audit_log'): Promise<number>;
  /** The allow-listed device's state of each object it has a row for, by object name. */
  states(device: TestDevice): Promise<Record<string, { state: string; reason: string | null }>>;
  /** The fixture's own directory (the devices' secure elements, writeTemp's files), removed by `svc.stop()`. */
  work: string;
  /** Writes `text` to a new file under `work`; its path. */
  writeTemp(name: string, text: string): string;
}

export async function startDeviceLinkFixture(
  backend: BackendName = 'sqlite',
  /** More config for the service (e.g. narrower listener limits). */
  overrides: ConfigInput = {},
  options: StartTestOptions = {},
): Promise<DeviceLinkFixture> {
  const work = mkdtempSync(join(tmpdir(), 'keyferry-dl-'));
  const removeWork = () => rmSync(work, { recursive: true, force: true });
  let svc: TestService;
  let otherVendor: VendorCa;
  try {
    otherVendor = await loadOrCreateVendorCa(join(work, 'other-vendor'));
    svc = await startTestService(
      backend,
      {
        products: [{ nc12: SE051, name: 'SE051', trustAnchors: [otherVendor.certificateFile] }],
        ...overrides,
      },
      options,
    );
  } catch (error) {
    removeWork();
    throw error;
  }
  // the devices' secure elements and the test's files go with the service's data directory
  const stopService = svc.stop;
  svc.stop = () => stopService().finally(removeWork);
  // Made after keyferryd started, as keyferry-sim would: the service reads it on demand.
  const vendor = await loadOrCreateVendorCa(join(svc.dataDir, 'sim'));
  const pki = await setupDeviceGateway(svc.url, svc.token);
  const db = svc.service.ctx.database.db;
  const factory = await db
    .selectFrom('factories')
    .selectAll()
    .where('name', '=', 'demo')
    .executeTakeFirstOrThrow();
  const serviceCa = readFileSync(join(svc.dataDir, 'service-ca.pem'), 'utf8');
  const address = svc.service.addresses.deviceLink!;
  let n = 0;
  return {
    svc,
    pki,
    vendor,
    otherVendor,
    work,
    serviceCa,
    subdomain: factory.subdomain,
    address,
    async device(options = {}) {
      const dir = join(work, `se${n++}`);
      const product = options.product ?? SE050;
      const made = await createSecureElement({ vendor, product, backend: { kind: 'dir', dir } });
      if (options.allowList ?? true) await allowListDevice(db, 'demo', made.uid.decimal, product);
      return {
        uid: made.uid,
        key: readFileSync(join(dir, 'SE_f0000000.key.pem'), 'utf8'),
        cert: readFileSync(join(dir, 'SE_f0000001.pem'), 'utf8'),
      };
    },
    call(device, options) {
      return deviceLinkCall({
        address,
        ca: serviceCa,
        servername: `${factory.subdomain}.device-link.localhost`,
        ...(device ? { key: device.key, cert: device.cert } : {}),
        ...options,
      });
    },
    async count(table) {
      const row = await db
        .selectFrom(table)
        .select((eb) => eb.fn.countAll().as('n'))
        .executeTakeFirstOrThrow();
      return Number(row.n);
    },
    writeTemp(name, text) {
      const path = join(mkdtempSync(join(work, 'file-')), name);
      writeFileSync(path, text);
      return path;
    },
    async states(device) {
      const rows = await db
        .selectFrom('device_objects')
        .innerJoin('devices', 'devices.id', 'device_objects.device_row_id')
        .innerJoin('secure_objects', 'secure_objects.id', 'device_objects.secure_object_id')
        .select(['secure_objects.name', 'device_objects.state', 'device_objects.reason'])
        .where('devices.device_id', '=', device.uid.decimal)
        .where('devices.deleted_at', 'is', null)
        .execute();
      return Object.fromEntries(rows.map((r) => [r.name, { state: r.state, reason: r.reason }]));
    },
  };
}

/** An identity with its own key, signed by `vendor` (or self-signed when vendor is undefined). */
export async function forgedIdentity(
  vendor: VendorCa | undefined,
  options: { product?: string; uid?: DeviceId; now?: Date; validityDays?: number } = {},
): Promise<TestDevice> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = new Uint8Array(publicKey.export({ format: 'der', type: 'spki' }));
  const uid = options.uid ?? randomUid();
  const signer = softSigner(privateKey);
  const issuer = vendor ?? {
    certificate: await selfSignedCa({ subject: { CN: 'self' }, signer, years: 1 }),
    signer,
  };
  const der = await identityCertificate({
    vendor: issuer,
    uid,
    product: options.product ?? SE050,
    publicKeySpki: spki,
    ...(options.now ? { now: options.now } : {}),
    ...(options.validityDays ? { validity: { days: options.validityDays } } : {}),
  });
  return {
    uid,
    key: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    cert: toPem(der, 'CERTIFICATE'),
  };
}

/** A base64 DER P-256 CSR for a fresh key, and that key. */
export async function freshCsr(): Promise<{ der: Uint8Array; base64: string; spki: Uint8Array }> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const signer = softSigner(privateKey);
  const der = await createCsr({ subject: { CN: 'ignored by the service' }, signer });
  return { der, base64: Buffer.from(der).toString('base64'), spki: signer.publicKeySpki };
}

/** One keep-alive connection of `device` for every call made with it, as the agent keeps one. */
export function keepAliveLink(f: Pick<DeviceLinkFixture, 'call'>, device: TestDevice) {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const call = (options: Parameters<DeviceLinkFixture['call']>[1]) => f.call(device, { agent, ...options });
  return {
    call,
    /** An EST enrollment (`op`) of `base64`, a fresh key's CSR unless given. */
    enroll: async (op = 'simpleenroll', base64?: string) =>
      call({
        method: 'POST',
        path: `/.well-known/est/fio-device-gateway-ca/${op}`,
        headers: { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' },
        body: base64 ?? (await freshCsr()).base64,
      }),
    /** A report of `body` (JSON). */
    report: (body: string) =>
      call({
        method: 'POST',
        path: '/device-link/v1/report',
        headers: { 'content-type': 'application/json' },
        body,
      }),
    close: () => agent.destroy(),
  };
}

/**
 * What keyferry-agent does over the device-link for the gateway pair: manifest, enroll a fresh
 * key, report (success, or the certificate FAILED with `failure`). `call` may be another node's.
 * Answers the report, whose correlation id the audit log keeps.
 */
export async function provisionOverDeviceLink(
  call: DeviceLinkFixture['call'],
  device: TestDevice,
  failure?: string,
): Promise<DeviceLinkAnswer> {
  const manifest = await call(device, { path: '/device-link/v1/manifest' });
  if (manifest.status !== 200) throw new Error(`manifest: ${manifest.status} ${manifest.text}`);
  const csr = await freshCsr();
  const enrolled = await call(device, {
    method: 'POST',
    path: '/.well-known/est/fio-device-gateway-ca/simpleenroll',
    headers: { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' },
    body: csr.base64,
  });
  if (enrolled.status !== 200) throw new Error(`simpleenroll: ${enrolled.status} ${enrolled.text}`);
  const report = await call(device, {
    method: 'POST',
    path: '/device-link/v1/report',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      results: [
        { name: 'fio-device-gateway-ca-kp', status: 'SUCCESS' },
        failure
          ? { name: 'fio-device-gateway-ca', status: 'FAILED', detail: failure }
          : { name: 'fio-device-gateway-ca', status: 'SUCCESS' },
      ],
    }),
  });
  if (report.status !== 200) throw new Error(`report: ${report.status} ${report.text}`);
  return report;
}

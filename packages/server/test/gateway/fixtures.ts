import { createHash, generateKeyPairSync } from 'node:crypto';
import {
  type DeviceId,
  deviceCertificate,
  deviceCertificateTemplate,
  factoryRootProfile,
  fromPem,
  intermediateCaFromCsr,
  parseCertificate,
  parseDeviceId,
  type Signer,
  softSigner,
  tlsServerFromCsr,
  toPem,
} from '@keyferry/core';
import { expect } from 'vitest';
import { createFactory } from '../../src/factories/create-factory.ts';
import { custodySignerById } from '../../src/keys/custody.ts';
import { createApiToken } from '../../src/tokens/api-tokens.ts';
import type { TestService } from '../support/service.ts';

/** A factory whose PKI was set up through the API as keys ca create + config-device-gateway do. */
export interface GatewayFactory {
  name: string;
  factoryId: number;
  token: string;
  host: string;
  rootDer: Uint8Array;
  rootPem: string;
  rootSigner: Signer;
  /** The fio-device-gateway-ca the service holds (key in custody), appended to ca-crt. */
  ca: { id: number; der: Uint8Array; pem: string; signer: Signer };
}

export const DEVICE_UID = '0x04005001eee3ba1ee96e60047e57da0f6880';
export const NC12 = '935389312472';

async function call(svc: TestService, token: string, method: string, path: string, body?: unknown) {
  const res = await svc.call(method, path, {
    ...(body === undefined ? {} : { body }),
    headers: { 'osf-token': token },
  });
  expect(res.status, `${method} ${path}: ${JSON.stringify(res.json)}`).toBeLessThan(300);
  return res.json;
}

/** Makes (or, for 'demo', takes) a factory and its PKI: root, gateway tls-crt, intermediate in ca-crt. */
export async function setupGatewayFactory(svc: TestService, name = 'demo'): Promise<GatewayFactory> {
  const ctx = svc.service.ctx;
  let token = svc.token;
  if (name !== 'demo') {
    const created = await createFactory(ctx, name, { actor: 'test', correlationId: 'test' });
    token = (
      await createApiToken(ctx.database.db, {
        factoryId: created.id,
        scopes: ['read', 'write'],
        description: 'test',
      })
    ).token;
  }
  const factory = await ctx.database.db
    .selectFrom('factories')
    .selectAll()
    .where('name', '=', name)
    .executeTakeFirstOrThrow();
  const host = `${factory.repo_id}.ota-lite.${ctx.config.domain}`;
  const rootSigner = softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
  const rootDer = await factoryRootProfile({ factory: name, signer: rootSigner });
  const rootPem = toPem(rootDer, 'CERTIFICATE');
  const prefix = `/ota/factories/${name}`;
  const certs = await call(svc, token, 'GET', `${prefix}/certs/`);
  const tls = await tlsServerFromCsr({
    csr: fromPem(certs['tls-csr'], 'CERTIFICATE REQUEST'),
    issuerCert: rootDer,
    signer: rootSigner,
    dnsNames: [host, 'localhost'],
  });
  await call(svc, token, 'PATCH', `${prefix}/certs/`, {
    'root-crt': rootPem,
    'tls-crt': toPem(tls, 'CERTIFICATE'),
  });
  const request = await call(svc, token, 'POST', `${prefix}/el2g/device-gateway/`, {});
  const caDer = await intermediateCaFromCsr({
    csr: fromPem(request.value, 'CERTIFICATE REQUEST'),
    issuerCert: rootDer,
    signer: rootSigner,
  });
  const caPem = toPem(caDer, 'CERTIFICATE');
  await call(svc, token, 'PUT', `${prefix}/el2g/device-gateway/`, {
    id: request.id,
    'root-ca': rootPem,
    'signed-cert': caPem,
  });
  await call(svc, token, 'PATCH', `${prefix}/certs/`, { 'ca-crt': caPem });
  const caRow = await ctx.database.db
    .selectFrom('intermediate_cas')
    .select(['id', 'key_ref'])
    .where('factory_id', '=', factory.id)
    .where('name', '=', 'fio-device-gateway-ca')
    .executeTakeFirstOrThrow();
  const signer = await custodySignerById(ctx.database.db, ctx.custody, caRow.key_ref);
  return {
    name,
    factoryId: factory.id,
    token,
    host,
    rootDer,
    rootPem,
    rootSigner,
    ca: { id: caRow.id, der: caDer, pem: caPem, signer },
  };
}

export interface IssueOptions {
  publicKeySpki: Uint8Array;
  deviceId?: DeviceId;
  /** OU of the certificate; default the factory's name. */
  ou?: string;
  validityDays?: number;
  now?: Date;
  /** Record it in the certificates table as issuance does (default true). */
  record?: boolean;
  deviceRowId?: number | null;
}

/** A device certificate signed by the factory's intermediate (core's device profile). */
export async function issueDeviceCert(svc: TestService, f: GatewayFactory, options: IssueOptions) {
  const deviceId = options.deviceId ?? parseDeviceId(DEVICE_UID);
  const template = deviceCertificateTemplate({
    issuerCert: f.ca.der,
    factory: options.ou ?? f.name,
    ...(options.validityDays === undefined ? {} : { validity: { days: options.validityDays } }),
  });
  const der = await deviceCertificate({
    template,
    deviceId,
    publicKeySpki: options.publicKeySpki,
    signer: f.ca.signer,
    ...(options.now ? { now: options.now } : {}),
  });
  const cert = parseCertificate(der);
  if (options.record ?? true) {
    await svc.service.ctx.database.db
      .insertInto('certificates')
      .values({
        factory_id: f.factoryId,
        device_row_id: options.deviceRowId ?? null,
        secure_object_id: null,
        ca_id: f.ca.id,
        serial_hex: cert.serialHex,
        public_key_sha256: createHash('sha256').update(options.publicKeySpki).digest('hex'),
        subject_cn: deviceId.hex,
        pem: toPem(der, 'CERTIFICATE'),
        not_before: cert.notBefore.toISOString(),
        not_after: cert.notAfter.toISOString(),
        issued_at: new Date().toISOString(),
        revoked_at: null,
        revocation_reason: null,
      })
      .execute();
  }
  return { der, pem: toPem(der, 'CERTIFICATE'), cert };
}

/** The gateway registry as rows, to show a refusal changed nothing. */
export async function registrySnapshot(svc: TestService) {
  return svc.service.ctx.database.db.selectFrom('gateway_devices').selectAll().orderBy('id').execute();
}

/** curl's output with `-w '\n%{http_code}'`: the status and the body (JSON when it parses). */
export function curlAnswer(stdout: string): { code: number; body: any } {
  const lines = stdout.split('\n');
  const code = Number(lines.pop());
  const text = lines.join('\n');
  try {
    return { code, body: JSON.parse(text) };
  } catch {
    return { code, body: text };
  }
}

import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { createCsr, fromPem, tlsServerFromCsr, toPem } from '@keyferry/core';
import { openToken } from '@keyferry/pkcs11';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS, startKeyferryd } from '../../../../test/support/processes.ts';
import { createSofthsmEnv, initTestToken, type SofthsmEnv } from '../../../../test/support/softhsm.ts';
import { createFactory } from '../../src/factories/create-factory.ts';
import { startGateway } from '../../src/gateway/listener.ts';
import { factoriesWithTlsKeyOnHsm } from '../../src/gateway/tls-contexts.ts';
import { custodyKeyRow } from '../../src/keys/custody.ts';
import { createApiToken } from '../../src/tokens/api-tokens.ts';
import { startTestService, type TestService } from '../support/service.ts';
import { DEVICE_UID, type GatewayFactory, issueDeviceCert, setupGatewayFactory } from './fixtures.ts';

describe('device gateway start-up', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('keyferryd binds the gateway, prints it and names it in listen.json', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keyferry-gw-start-'));
    dirs.push(dir);
    const daemon = await startKeyferryd(dir);
    try {
      expect(daemon.listen.gateway).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(daemon.listen.gateway).not.toBe(daemon.listen.deviceLink);
      expect(JSON.parse(readFileSync(join(dir, 'listen.json'), 'utf8')).gateway).toBe(daemon.listen.gateway);
      // main prints the addresses just after startService wrote listen.json.
      while (!daemon.stdout().includes('Device gateway:')) await new Promise((r) => setTimeout(r, 20));
      expect(daemon.stdout()).toContain(`Device gateway: ${daemon.listen.gateway}\n`);
    } finally {
      await daemon.stop();
    }
  });
});

/** GET /device over TLS to the gateway; the answer, and the key the gateway presented. */
function getDevice(
  address: string,
  f: GatewayFactory,
  client: { cert: string; key: string } | undefined,
): Promise<{ status: number; body: any; serverSpki: string }> {
  const [, port] = address.split(':');
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port: Number(port),
        servername: f.host,
        path: '/device',
        ca: f.rootPem,
        ...client,
        agent: false,
      },
      (res) => {
        let text = '';
        res.on('data', (chunk) => {
          text += chunk;
        });
        res.on('end', () => {
          const peer = (res.socket as TLSSocket).getPeerX509Certificate();
          resolve({
            status: res.statusCode ?? 0,
            body: JSON.parse(text),
            serverSpki: peer!.publicKey.export({ format: 'der', type: 'spki' }).toString('base64'),
          });
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}

function capture() {
  const lines: any[] = [];
  const log = pino(
    { level: 'warn' },
    new Writable({
      write(chunk, _enc, done) {
        lines.push(JSON.parse(String(chunk)));
        done();
      },
    }),
  );
  return { log, lines };
}

describe('device gateway with pkcs11 key custody', () => {
  let hsm: SofthsmEnv;
  let svc: TestService;
  let demo: GatewayFactory;
  const tokenLabel = 'keyferryd';
  const pin = '4321';

  beforeAll(async () => {
    hsm = createSofthsmEnv();
    initTestToken(hsm.conf, { label: tokenLabel, userPin: pin });
    svc = await startTestService('sqlite', {
      keyCustody: { kind: 'pkcs11', module: hsm.module, tokenLabel, pin },
    });
    demo = await setupGatewayFactory(svc, 'demo');
  });
  afterAll(async () => {
    await svc?.stop();
    hsm?.cleanup();
  });

  async function keyRow(id: string) {
    return svc.service.ctx.database.db
      .selectFrom('custody_keys')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirstOrThrow();
  }

  async function pkiRow(factoryId: number) {
    return svc.service.ctx.database.db
      .selectFrom('factory_pki')
      .selectAll()
      .where('factory_id', '=', factoryId)
      .executeTakeFirstOrThrow();
  }

  it('runs: CA keys on the token, the tls-crt key in soft custody, a device gets its record', async () => {
    const address = svc.service.addresses.gateway!;
    expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(JSON.parse(readFileSync(join(svc.dataDir, 'listen.json'), 'utf8')).gateway).toBe(address);
    const pki = await pkiRow(demo.factoryId);
    const tlsKey = await keyRow(pki.tls_key_ref);
    expect(tlsKey).toMatchObject({ backend: 'soft', purpose: 'gateway-tls:demo' });
    const caKey = await svc.service.ctx.database.db
      .selectFrom('intermediate_cas')
      .innerJoin('custody_keys', 'custody_keys.id', 'intermediate_cas.key_ref')
      .select(['custody_keys.backend', 'custody_keys.material'])
      .where('intermediate_cas.id', '=', demo.ca.id)
      .executeTakeFirstOrThrow();
    expect(caKey.backend).toBe('pkcs11');
    const token = openToken({ module: hsm.module, tokenLabel, pin });
    try {
      expect(token.keyAttributes({ label: caKey.material })).toMatchObject({ extractable: false });
      expect(token.findPrivateKey({ label: tlsKey.material })).toBeUndefined();
    } finally {
      token.close();
    }

    const device = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = new Uint8Array(device.publicKey.export({ format: 'der', type: 'spki' }));
    const { pem } = await issueDeviceCert(svc, demo, { publicKeySpki: spki });
    const answer = await getDevice(address, demo, {
      cert: pem,
      key: String(device.privateKey.export({ format: 'pem', type: 'pkcs8' })),
    });
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ name: DEVICE_UID.slice(2), factory: 'demo' });
    expect(answer.serverSpki).toBe(tlsKey.public_key);
  });

  it('a gateway TLS key on the HSM (made before the TLS key store): named at start, refused, rotate-tls moves it', async () => {
    // what keyferry did before: the gateway key generated in the pkcs11 custody
    const ctx = svc.service.ctx;
    const old = await ctx.custody.generate('gateway-tls:demo');
    const oldRow = custodyKeyRow(old, new Date());
    await ctx.database.db.insertInto('custody_keys').values(oldRow).execute();
    const csr = await createCsr({
      subject: { CN: demo.host, OU: 'demo' },
      dnsNames: [demo.host],
      signer: await ctx.custody.signer(oldRow),
    });
    const tlsCrt = await tlsServerFromCsr({
      csr,
      issuerCert: demo.rootDer,
      signer: demo.rootSigner,
      dnsNames: [demo.host],
    });
    await ctx.database.db
      .updateTable('factory_pki')
      .set({
        tls_key_ref: old.id,
        tls_csr: toPem(csr, 'CERTIFICATE REQUEST'),
        tls_crt: toPem(tlsCrt, 'CERTIFICATE'),
        updated_at: new Date().toISOString(),
      })
      .where('factory_id', '=', demo.factoryId)
      .execute();

    const { log, lines } = capture();
    const gateway = await startGateway(ctx, { log, listen: '127.0.0.1:0' });
    try {
      const advice =
        "the device gateway TLS key of factory demo is on the HSM (made before keyferry kept TLS keys in soft custody) and Node's TLS server cannot present it: run keyferry keys ca rotate-tls <pki-dir> for the factory to move it into soft custody";
      expect(lines).toEqual([expect.objectContaining({ level: 40, factories: ['demo'], msg: advice })]);
      await expect(getDevice(gateway.address, demo, undefined)).rejects.toThrow();

      // keyferry keys ca rotate-tls: a new CSR, signed by the root, PATCHed back
      const rotated = await svc.call('POST', '/ota/factories/demo/certs/', { body: { 'tls-csr': true } });
      expect(rotated.status).toBe(201);
      const pending = await pkiRow(demo.factoryId);
      expect((await keyRow(pending.pending_tls_key_ref!)).backend).toBe('soft');
      const newCrt = await tlsServerFromCsr({
        csr: fromPem(rotated.json['tls-csr'], 'CERTIFICATE REQUEST'),
        issuerCert: demo.rootDer,
        signer: demo.rootSigner,
        dnsNames: [demo.host],
      });
      const patched = await svc.call('PATCH', '/ota/factories/demo/certs/', {
        body: { 'tls-crt': toPem(newCrt, 'CERTIFICATE') },
      });
      expect(patched.status).toBe(200);
      const answer = await getDevice(gateway.address, demo, undefined);
      expect(answer.status).toBe(403); // no client certificate, but TLS with the new key
      const now = await pkiRow(demo.factoryId);
      expect(answer.serverSpki).toBe((await keyRow(now.tls_key_ref)).public_key);
      expect(await factoriesWithTlsKeyOnHsm(ctx.database.db, ctx.tlsKeys)).toEqual([]);
    } finally {
      await gateway.close();
    }
  });

  it('keys ca create on a factory whose waiting TLS key is on the HSM gets a CSR of a new soft key', async () => {
    const ctx = svc.service.ctx;
    const factory = await createFactory(ctx, 'older', { actor: 'test', correlationId: 'test' });
    const old = await ctx.custody.generate('gateway-tls:older');
    const oldRow = custodyKeyRow(old, new Date());
    await ctx.database.db.insertInto('custody_keys').values(oldRow).execute();
    await ctx.database.db
      .updateTable('factory_pki')
      .set({ tls_key_ref: old.id })
      .where('factory_id', '=', factory.id)
      .execute();
    const { token } = await createApiToken(ctx.database.db, {
      factoryId: factory.id,
      scopes: ['read', 'write'],
      description: 'test',
    });
    const answer = await svc.call('POST', '/ota/factories/older/certs/', {
      body: { 'first-time-init': true, 'tls-csr': true },
      headers: { 'osf-token': token },
    });
    expect(answer.status).toBe(201);
    const pki = await pkiRow(factory.id);
    expect(pki.tls_key_ref).not.toBe(old.id);
    expect(pki.tls_csr).toBe(answer.json['tls-csr']);
    expect(await keyRow(pki.tls_key_ref)).toMatchObject({ backend: 'soft', purpose: 'gateway-tls:older' });
  });
});

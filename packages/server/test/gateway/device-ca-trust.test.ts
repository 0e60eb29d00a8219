import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  buildCrl,
  createCsr,
  deviceCertificate,
  deviceCertificateTemplate,
  intermediateCaFromCsr,
  parseCertificate,
  parseDeviceId,
  type RevocationReason,
  softSigner,
  toPem,
} from '@keyferry/core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTestService, type TestService } from '../support/service.ts';
import {
  curlAnswer,
  type GatewayFactory,
  issueDeviceCert,
  registrySnapshot,
  setupGatewayFactory,
} from './fixtures.ts';

/**
 * Which device CAs the gateway trusts, as the factory root decides through certs/: a blank or
 * incomplete ca-crt cannot drop them unnoticed, a CA the root revokes is refused at once
 * (curl as the device), a disabled one registers no new device.
 */
describe('device gateway trust in device CAs (ca-crt, ca-revoke-crl)', () => {
  let svc: TestService;
  let demo: GatewayFactory;
  let work: string;
  let port: string;
  let local: { der: Uint8Array; pem: string; signer: ReturnType<typeof softSigner> };
  const file = (name: string, text: string) => {
    const path = join(work, name);
    writeFileSync(path, text);
    return path;
  };
  const certs = () => svc.call('GET', '/ota/factories/demo/certs/');

  /** A device key and a certificate for it from the local CA (CN = the device id). */
  async function localDevice(uid: string) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = new Uint8Array(publicKey.export({ format: 'der', type: 'spki' }));
    const der = await deviceCertificate({
      template: deviceCertificateTemplate({ issuerCert: local.der, factory: 'demo' }),
      deviceId: parseDeviceId(uid),
      publicKeySpki: spki,
      signer: local.signer,
    });
    const key = String(privateKey.export({ format: 'pem', type: 'pkcs8' }));
    return {
      cert: file(`${uid}.pem`, toPem(der, 'CERTIFICATE')),
      key: file(`${uid}.key`, key),
      certPem: toPem(der, 'CERTIFICATE'),
      keyPem: key,
    };
  }

  /** GET /device as aktualizr-lite does, with curl (key and certificate in files). */
  function curl(device: { cert: string; key: string }) {
    const args = [
      '--silent',
      '--show-error',
      '--cacert',
      join(work, 'root.crt'),
      '--cert',
      device.cert,
      '--key',
      device.key,
    ];
    args.push(
      '--resolve',
      `${demo.host}:${port}:127.0.0.1`,
      '-w',
      '\n%{http_code}',
      `https://${demo.host}:${port}/device`,
    );
    return new Promise<{ code: number; body: any; stderr: string }>((resolve) => {
      execFile('curl', args, { encoding: 'utf8' }, (_error, stdout, stderr) => {
        resolve({ ...curlAnswer(stdout), stderr });
      });
    });
  }

  async function revokeCrl(ca: Uint8Array, reason: RevocationReason) {
    const now = new Date();
    const der = await buildCrl({
      issuerCert: demo.rootDer,
      signer: demo.rootSigner,
      revoked: [{ serialHex: parseCertificate(ca).serialHex, revokedAt: now, reason }],
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + 15 * 60_000),
      crlNumber: 1,
    });
    return toPem(der, 'X509 CRL');
  }

  /** GET /device over one kept-alive TLS connection (node's https client) with the device's pair. */
  function keptAlive(device: { certPem: string; keyPem: string }) {
    const agent = new Agent({
      keepAlive: true,
      maxSockets: 1,
      ca: demo.rootPem,
      cert: device.certPem,
      key: device.keyPem,
    });
    const get = () =>
      new Promise<{ status: number; body: any; reused: boolean }>((resolve, reject) => {
        const req = request(
          { host: '127.0.0.1', port: Number(port), servername: demo.host, path: '/device', agent },
          (res) => {
            let text = '';
            res.on('data', (d) => (text += d));
            res.on('end', () =>
              resolve({ status: res.statusCode ?? 0, body: JSON.parse(text), reused: req.reusedSocket }),
            );
          },
        );
        req.on('error', reject);
        req.end();
      });
    return { agent, get };
  }

  beforeAll(async () => {
    svc = await startTestService('sqlite');
    demo = await setupGatewayFactory(svc, 'demo');
    port = svc.service.addresses.gateway!.split(':').pop()!;
    work = mkdtempSync(join(tmpdir(), 'keyferry-gw-ca-'));
    file('root.crt', demo.rootPem);
    const signer = softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
    const csr = await createCsr({ subject: { CN: 'local-ca', OU: 'demo' }, signer });
    const der = await intermediateCaFromCsr({ csr, issuerCert: demo.rootDer, signer: demo.rootSigner });
    local = { der, pem: toPem(der, 'CERTIFICATE'), signer };
  });
  afterAll(async () => {
    await svc?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('PATCH certs/ with a blank ca-crt no longer removes every device CA: refused, devices keep connecting', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = new Uint8Array(publicKey.export({ format: 'der', type: 'spki' }));
    const issued = await issueDeviceCert(svc, demo, { publicKeySpki: spki });
    const device = {
      cert: file('gw-device.pem', issued.pem),
      key: file('gw-device.key', String(privateKey.export({ format: 'pem', type: 'pkcs8' }))),
    };
    expect((await curl(device)).code).toBe(200);
    const before = (await certs()).json;
    const db = svc.service.ctx.database.db;
    const audit = (await db.selectFrom('audit_log').select('id').execute()).length;
    for (const body of [{ 'ca-crt': '' }, { 'ca-crt': ' \n' }, { 'ca-crt': local.pem }]) {
      const res = await svc.call('PATCH', '/ota/factories/demo/certs/', { body });
      expect([res.status, res.json.code], JSON.stringify(body)).toEqual([409, 'conflict']);
    }
    const lacking = await svc.call('PATCH', '/ota/factories/demo/certs/', { body: { 'ca-crt': local.pem } });
    expect(lacking.json.detail).toContain('leaves out intermediate CA fio-device-gateway-ca');
    expect((await certs()).json).toEqual(before);
    expect((await db.selectFrom('audit_log').select('id').execute()).length).toBe(audit);
    expect((await curl(device)).code).toBe(200);
  });

  it('a revoked device CA is refused by the gateway at once, on a new and on a kept-alive connection', async () => {
    const added = await svc.call('PATCH', '/ota/factories/demo/certs/', {
      body: { 'ca-crt': demo.ca.pem + local.pem },
    });
    expect(added.status, JSON.stringify(added.json)).toBe(200);
    const device = await localDevice('0x04005001eee3ba1ee96e60047e57da0f6890');
    const ok = await curl(device);
    expect(ok.code, ok.stderr).toBe(200);
    expect(ok.body.name).toBe('04005001eee3ba1ee96e60047e57da0f6890');

    // node's https client keeps one TLS connection open across the revocation
    const { agent, get } = keptAlive(device);
    expect((await get()).status).toBe(200);

    const revoke = await svc.call('PATCH', '/ota/factories/demo/certs/', {
      body: { 'ca-revoke-crl': await revokeCrl(local.der, 'privilegeWithdrawn') },
    });
    expect(revoke.status, JSON.stringify(revoke.json)).toBe(200);
    expect(revoke.json['ca-crt']).toBe(demo.ca.pem);

    const kept = await get();
    expect(kept.reused).toBe(true);
    expect([kept.status, kept.body.code]).toEqual([403, 'certificate_revoked']);
    agent.destroy();
    const before = await registrySnapshot(svc);
    const fresh = await curl(device);
    expect([fresh.code, fresh.body.code]).toEqual([403, 'certificate_revoked']);
    expect(fresh.body.detail).toContain(`serial ${BigInt(`0x${parseCertificate(local.der).serialHex}`)}`);
    expect(await registrySnapshot(svc)).toEqual(before);
  });

  it('a certificate that expires is refused on the connection it opened, not served on while kept alive', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const issued = await issueDeviceCert(svc, demo, {
      publicKeySpki: new Uint8Array(publicKey.export({ format: 'der', type: 'spki' })),
      deviceId: parseDeviceId('0x04005001eee3ba1ee96e60047e57da0f68e1'),
      validityDays: 1,
    });
    const { agent, get } = keptAlive({
      certPem: issued.pem,
      keyPem: String(privateKey.export({ format: 'pem', type: 'pkcs8' })),
    });
    try {
      expect((await get()).status).toBe(200);
      // the service's clock passes the certificate's notAfter; the connection stays open
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(new Date(issued.cert.notAfter.getTime() + 1000));
      const later = await get();
      expect(later.reused).toBe(true);
      expect([later.status, later.body.code]).toEqual([403, 'untrusted_client_certificate']);
      expect(later.body.detail).toContain(
        `the client certificate (serial ${issued.cert.serialHex}) is valid from ${issued.cert.notBefore.toISOString()} to ${issued.cert.notAfter.toISOString()}, not now`,
      );
    } finally {
      vi.useRealTimers();
      agent.destroy();
    }
  });

  it('a disabled device CA serves the devices the gateway knows and registers no new one', async () => {
    const re = await svc.call('PATCH', '/ota/factories/demo/certs/', {
      body: { 'ca-crt': demo.ca.pem + local.pem },
    });
    expect(re.status).toBe(200); // fioctl: a revoked CA is re-added with keys ca update
    const known = await localDevice('0x04005001eee3ba1ee96e60047e57da0f6891');
    expect((await curl(known)).code).toBe(200);
    const disable = await svc.call('PATCH', '/ota/factories/demo/certs/', {
      body: { 'ca-revoke-crl': await revokeCrl(local.der, 'certificateHold') },
    });
    expect(disable.json['disabled-ca-serials']).toEqual([
      BigInt(`0x${parseCertificate(local.der).serialHex}`).toString(),
    ]);
    expect((await curl(known)).code).toBe(200);
    const newcomer = await localDevice('0x04005001eee3ba1ee96e60047e57da0f6892');
    const refused = await curl(newcomer);
    expect([refused.code, refused.body.code]).toEqual([403, 'untrusted_client_certificate']);
    expect(refused.body.detail).toContain('is disabled: it registers no new devices');
  });
});

import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueCertificate, parseDeviceId, softSigner, toPem } from '@keyferry/core';
import { opensslEngineKeyUri, openToken } from '@keyferry/pkcs11';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS, runBinAsync } from '../../../../test/support/processes.ts';
import { createSofthsmEnv, initTestToken, type SofthsmEnv } from '../../../../test/support/softhsm.ts';
import { startTestService, type TestService } from '../support/service.ts';
import {
  curlAnswer,
  type GatewayFactory,
  issueDeviceCert,
  NC12,
  registrySnapshot,
  setupGatewayFactory,
} from './fixtures.ts';

/**
 * aktualizr-lite played by curl through OpenSSL with its key in PKCS#11 (docs/api.md): the key
 * is generated on a SoftHSM2 token like the agent's SE_83000042, the certificate is issued by
 * the factory's fio-device-gateway-ca, and the server is checked with root.crt.
 */
describe('device gateway with curl + the OpenSSL PKCS#11 engine', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  let hsm: SofthsmEnv;
  let svc: TestService;
  let demo: GatewayFactory;
  let other: GatewayFactory;
  let work: string;
  let port: string;
  let keyUri: string;
  let spki: Uint8Array;
  const file = (name: string, text: string) => {
    const path = join(work, name);
    writeFileSync(path, text);
    return path;
  };

  beforeAll(async () => {
    hsm = createSofthsmEnv();
    const token = initTestToken(hsm.conf);
    const session = openToken({ module: hsm.module, tokenLabel: token.label, pin: token.userPin });
    spki = new Uint8Array(
      session.generateEcKeyPair({ label: 'SE_83000042', id: Uint8Array.of(1) }).publicKeySpki,
    );
    session.close();
    keyUri = opensslEngineKeyUri({ tokenLabel: token.label, objectLabel: 'SE_83000042', pin: token.userPin });
    svc = await startTestService('sqlite');
    demo = await setupGatewayFactory(svc, 'demo');
    other = await setupGatewayFactory(svc, 'other');
    port = svc.service.addresses.gateway!.split(':').pop()!;
    work = mkdtempSync(join(tmpdir(), 'keyferry-gw-curl-'));
    file('root.crt', demo.rootPem);
  });
  afterAll(async () => {
    await svc?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
    hsm?.cleanup();
  });

  /** GET /device as aktualizr-lite would; `code` 0 means TLS failed before any HTTP answer. */
  function curl(cert: string | undefined, options: { host?: string } = {}) {
    const host = options.host ?? demo.host;
    const args = ['--silent', '--show-error', '--cacert', join(work, 'root.crt')];
    if (cert) args.push('--engine', 'pkcs11', '--key-type', 'ENG', '--key', keyUri, '--cert', cert);
    args.push(
      '--resolve',
      `${host}:${port}:127.0.0.1`,
      '-w',
      '\n%{http_code}',
      `https://${host}:${port}/device`,
    );
    return new Promise<{ exit: number; code: number; body: any; stderr: string }>((resolve) => {
      execFile('curl', args, { env: hsm.env, encoding: 'utf8' }, (error, stdout, stderr) => {
        resolve({ exit: error ? Number(error.code ?? 1) : 0, ...curlAnswer(stdout), stderr });
      });
    });
  }

  async function expectRefused(cert: string | undefined, code: string) {
    const before = await registrySnapshot(svc);
    const answer = await curl(cert);
    expect(answer.code, answer.stderr).toBe(403);
    expect(answer.body.code).toBe(code);
    expect(await registrySnapshot(svc)).toEqual(before);
    return answer;
  }

  it('a provisioned certificate gets its record, and the device appears in keyferry devices list', async () => {
    const { pem, cert } = await issueDeviceCert(svc, demo, { publicKeySpki: spki });
    const answer = await curl(file('device.pem', pem));
    expect(answer.code, answer.stderr).toBe(200);
    expect(answer.body).toMatchObject({
      name: '04005001eee3ba1ee96e60047e57da0f6880',
      factory: 'demo',
      'cert-serial': cert.serialHex,
      'cert-fingerprint': cert.fingerprintSha256,
    });
    expect(answer.body['first-seen']).toBe(answer.body['last-seen']);

    const again = await curl(join(work, 'device.pem'));
    expect(again.body['first-seen']).toBe(answer.body['first-seen']);
    expect(again.body['last-seen'] >= answer.body['last-seen']).toBe(true);
    expect(await registrySnapshot(svc)).toHaveLength(1);

    const listed = await runBinAsync('keyferry', [
      '--server',
      svc.url,
      '-t',
      svc.token,
      '-f',
      'demo',
      'devices',
      'list',
    ]);
    expect(listed.stderr).toBe('');
    expect(listed.status).toBe(0);
    const lines = listed.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME {2,}FIRST SEEN {2,}LAST SEEN {2,}CERT SERIAL$/);
    expect(lines[1]).toMatch(/^-{4} {2,}-{10} {2,}-{9} {2,}-{11}$/);
    expect(lines.slice(2)).toEqual([
      `04005001eee3ba1ee96e60047e57da0f6880  ${answer.body['first-seen']}  ${again.body['last-seen']}  ${cert.serialHex}`,
    ]);
  });

  it('refuses a certificate revoked by deleting the device from the allow-list', async () => {
    const id = '0x04005001eee3ba1ee96e60047e57da0f6881';
    const added = await svc.call('POST', '/ota/factories/demo/el2g/devices/', {
      body: { 'product-id': NC12, devices: [id] },
    });
    expect(added.status).toBe(200);
    const row = await svc.service.ctx.database.db
      .selectFrom('devices')
      .select('id')
      .where('device_id', '=', parseDeviceId(id).decimal)
      .executeTakeFirstOrThrow();
    const { pem } = await issueDeviceCert(svc, demo, {
      publicKeySpki: spki,
      deviceId: parseDeviceId(id),
      deviceRowId: row.id,
    });
    const path = file('revoked.pem', pem);
    expect((await curl(path)).code).toBe(200);
    const deleted = await svc.call('DELETE', '/ota/factories/demo/el2g/devices/', {
      body: { 'product-id': NC12, devices: [id] },
    });
    expect(deleted.status).toBe(200);
    const answer = await expectRefused(path, 'certificate_revoked');
    expect(answer.body.detail).toMatch(/revoked at .*allow-list/);
  });

  it("refuses a certificate of another factory's device CA", async () => {
    const { pem } = await issueDeviceCert(svc, other, { publicKeySpki: spki });
    const answer = await expectRefused(file('other-factory.pem', pem), 'untrusted_client_certificate');
    expect(answer.body.detail).toContain('does not chain to a device CA of factory demo');
  });

  it('refuses a certificate of this CA whose OU names another factory', async () => {
    const { pem } = await issueDeviceCert(svc, demo, { publicKeySpki: spki, ou: 'other' });
    const answer = await expectRefused(file('ou-other.pem', pem), 'wrong_factory');
    expect(answer.body.detail).toContain('names factory "other" in its OU, not demo');
  });

  it('refuses a certificate from a CA that is not in ca-crt (a vendor identity CA)', async () => {
    const vendor = softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
    const now = new Date();
    const identity = await issueCertificate({
      issuer: { name: { CN: 'simulated SE05x vendor root' }, publicKeySpki: vendor.publicKeySpki },
      subject: { OU: NC12, CN: '04005001eee3ba1ee96e60047e57da0f6880' },
      subjectPublicKeySpki: spki,
      serial: Uint8Array.of(0x42),
      notBefore: new Date(now.getTime() - 60_000),
      notAfter: new Date(now.getTime() + 86_400_000),
      extensions: {
        basicConstraints: { ca: false },
        keyUsage: ['digitalSignature'],
        extKeyUsage: ['clientAuth'],
      },
      signer: vendor,
    });
    await expectRefused(file('identity.pem', toPem(identity, 'CERTIFICATE')), 'untrusted_client_certificate');
  });

  it('refuses an expired certificate', async () => {
    const { pem } = await issueDeviceCert(svc, demo, {
      publicKeySpki: spki,
      validityDays: 1,
      now: new Date(Date.now() - 3 * 86_400_000),
    });
    const answer = await expectRefused(file('expired.pem', pem), 'untrusted_client_certificate');
    expect(answer.body.detail).toContain('expired at');
  });

  it("refuses a certificate signed with this factory's CA key that the service never issued", async () => {
    const { pem } = await issueDeviceCert(svc, demo, { publicKeySpki: spki, record: false });
    const answer = await expectRefused(file('unrecorded.pem', pem), 'untrusted_client_certificate');
    expect(answer.body.detail).toContain('is not one this service issued');
  });

  it('refuses a connection without a client certificate', async () => {
    const answer = await expectRefused(undefined, 'client_certificate_required');
    expect(answer.body.detail).toContain('no client certificate');
  });

  it('fails at TLS without SNI while two factories have a tls-crt', async () => {
    const answer = await curl(join(work, 'device.pem'), { host: '127.0.0.1' });
    expect(answer.code).toBe(0);
    expect(answer.exit).not.toBe(0);
  });

  it('fails at TLS for a host name that is no factory', async () => {
    const answer = await curl(join(work, 'device.pem'), { host: 'nosuchrepo.ota-lite.localhost' });
    expect(answer.code).toBe(0);
    expect(answer.exit).not.toBe(0);
  });
});

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { opensslEngineKeyUri } from '@keyferry/pkcs11';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setupDeviceGateway } from '../support/device-link.ts';
import { type DaemonProcess, PROCESS_TEST_TIMEOUT_MS, runBin, startKeyferryd } from '../support/processes.ts';
import { createSofthsmEnv, type SofthsmEnv } from '../support/softhsm.ts';

const SE050 = '935389312472';
const PIN = '87654321';

/**
 * The acceptance of the device-link (issue 5): a real keyferryd process, a secure element made
 * by keyferry-sim on a SoftHSM2 token, and the device played by standard tools only —
 * pkcs11-tool, `openssl req -engine pkcs11`, `curl --engine pkcs11`, `openssl pkcs7`/`verify`.
 */
describe('device-link interop: keyferry-sim token + openssl + curl against keyferryd', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  let work: string;
  let hsm: SofthsmEnv;
  let daemon: DaemonProcess;
  let token: string;
  let uid: string;
  const tools = (cmd: string, args: string[]) =>
    execFileSync(cmd, args, {
      cwd: work,
      env: { ...hsm.env, PKCS11_MODULE_PATH: hsm.module },
      stdio: ['ignore', 'pipe', 'pipe'],
    }).toString('utf8');
  const cli = (args: string[]) =>
    runBin('keyferry', ['--server', daemon.listen.api, '-t', token, '-f', 'demo', ...args], {
      env: { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg') },
    });

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-interop-'));
    hsm = createSofthsmEnv({ setProcessEnv: false });
    const dataDir = join(work, 'data');
    daemon = await startKeyferryd(dataDir);
    token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
    // keyferry-sim makes the chip (and its vendor CA) after keyferryd started, in the shared data dir.
    const sim = runBin('sim', ['se05x', 'create', '--product', SE050, '--pkcs11'], {
      env: { KEYFERRY_DATA_DIR: dataDir, SOFTHSM2_CONF: hsm.conf },
    });
    expect(sim.stderr).toBe('');
    expect(sim.status).toBe(0);
    uid = sim.stdout.trim();
    expect(uid).toMatch(/^0x04005001[0-9a-f]{28}$/);
    const pki = await setupDeviceGateway(daemon.listen.api, token);
    writeFileSync(join(work, 'factory_ca.pem'), pki.rootPem);
    writeFileSync(join(work, 'intermediate.pem'), pki.intermediatePem);
  });
  afterAll(async () => {
    await daemon?.stop();
    hsm?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it('listens on its own TLS port, with its own service CA and key files kept 0600', () => {
    expect(daemon.listen.deviceLink).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(daemon.stdout()).toContain(`Device-link: ${daemon.listen.deviceLink}`);
    for (const file of ['service-ca.key', 'device-link-tls.key']) {
      expect(statSync(join(work, 'data', file)).mode & 0o777, file).toBe(0o600);
    }
    const san = tools('openssl', [
      'x509',
      '-in',
      join(work, 'data', 'device-link-tls.pem'),
      '-noout',
      '-ext',
      'subjectAltName',
    ]);
    expect(san).toContain('DNS:*.device-link.localhost');
    expect(
      tools('openssl', [
        'verify',
        '-CAfile',
        join(work, 'data', 'service-ca.pem'),
        join(work, 'data', 'device-link-tls.pem'),
      ]),
    ).toContain(': OK');
  });

  it('enrolls a token key with openssl + curl, and el2g devices show has the certificate', async () => {
    const added = cli(['el2g', 'devices', 'add', SE050, uid]);
    expect(added.status, added.stderr).toBe(0);
    const p11 = ['--module', hsm.module, '--token-label', 'aktualizr', '--login', '--pin', PIN];
    // the identity certificate, as the device reads it from object 0xF0000001
    tools('pkcs11-tool', [
      ...p11,
      '--read-object',
      '--type',
      'cert',
      '--label',
      'SE_f0000001',
      '-o',
      'identity.der',
    ]);
    tools('openssl', ['x509', '-inform', 'DER', '-in', 'identity.der', '-out', 'identity.pem']);
    // the device generates its gateway key in the SE and makes the CSR with it
    tools('pkcs11-tool', [
      ...p11,
      '--keypairgen',
      '--key-type',
      'EC:prime256v1',
      '--label',
      'SE_83000042',
      '--id',
      '83000042',
    ]);
    const csrKey = opensslEngineKeyUri({ tokenLabel: 'aktualizr', objectLabel: 'SE_83000042', pin: PIN });
    tools('openssl', [
      'req',
      '-new',
      '-engine',
      'pkcs11',
      '-keyform',
      'engine',
      '-key',
      csrKey,
      '-subj',
      '/CN=device',
      '-outform',
      'DER',
      '-out',
      'csr.der',
    ]);
    tools('openssl', ['base64', '-in', 'csr.der', '-out', 'csr.b64']);

    // EL2GO_HOSTNAME, as the guide gets it: `el2g status | grep domain`
    const host = /^# Subdomain: (\S+)$/m.exec(cli(['el2g', 'status']).stdout)?.[1];
    expect(host).toMatch(/^[a-z0-9]{16}\.device-link\.localhost$/);
    const port = daemon.listen.deviceLink!.split(':').pop()!;
    const identityKey = opensslEngineKeyUri({
      tokenLabel: 'aktualizr',
      objectLabel: 'SE_f0000000',
      pin: PIN,
    });
    const curl = [
      '--silent',
      '--show-error',
      '--fail-with-body',
      '--engine',
      'pkcs11',
      '--key-type',
      'ENG',
      '--key',
      identityKey,
      '--cert',
      'identity.pem',
      '--cacert',
      join(work, 'data', 'service-ca.pem'),
      '--resolve',
      `${host}:${port}:127.0.0.1`,
      '-D',
      'headers.txt',
    ];
    const manifest = JSON.parse(tools('curl', [...curl, `https://${host}:${port}/device-link/v1/manifest`]));
    expect(manifest.device).toBe(BigInt(uid).toString().padStart(42, '0'));
    expect(manifest.objects.map((o: any) => [o.name, o.state])).toEqual([
      ['fio-device-gateway-ca-kp', 'GENERATION_TRIGGERED'],
      ['fio-device-gateway-ca', 'GENERATION_TRIGGERED'],
    ]);
    tools('curl', [
      ...curl,
      '-H',
      'Content-Type: application/pkcs10',
      '-H',
      'Content-Transfer-Encoding: base64',
      '--data-binary',
      '@csr.b64',
      '-o',
      'answer.b64',
      `https://${host}:${port}/.well-known/est/fio-device-gateway-ca/simpleenroll`,
    ]);
    const headers = readFileSync(join(work, 'headers.txt'), 'utf8');
    expect(headers).toMatch(/content-type: application\/pkcs7-mime; smime-type=certs-only/i);
    expect(headers).toMatch(/x-correlation-id: [0-9a-f-]{36}/i);

    tools('openssl', ['base64', '-d', '-in', 'answer.b64', '-out', 'answer.p7']);
    const pem = tools('openssl', ['pkcs7', '-inform', 'DER', '-in', 'answer.p7', '-print_certs']);
    writeFileSync(join(work, 'device.pem'), pem);
    expect(
      tools('openssl', [
        'verify',
        '-CAfile',
        'factory_ca.pem',
        '-untrusted',
        'intermediate.pem',
        'device.pem',
      ]),
    ).toContain('device.pem: OK');
    const text = tools('openssl', ['x509', '-in', 'device.pem', '-noout', '-subject', '-pubkey']);
    expect(text).toContain(`CN = ${uid.slice(2)}`);
    expect(text).toContain('OU = demo');
    // the certificate is for the token key the CSR was made with
    const tokenPub = tools('openssl', ['req', '-inform', 'DER', '-in', 'csr.der', '-noout', '-pubkey']);
    expect(text).toContain(tokenPub.trim());

    const shown = cli(['el2g', 'devices', 'show', uid]);
    expect(shown.status, shown.stderr).toBe(0);
    expect(shown.stdout).toContain('Hardware 12NC: 935389312472');
    expect(shown.stdout).toMatch(/\tfio-device-gateway-ca +CERTIFICATE +GENERATION_COMPLETED/);
    expect(shown.stdout).toContain('# fio-device-gateway-ca');
    expect(shown.stdout).toContain(
      readFileSync(join(work, 'device.pem'), 'utf8').match(
        /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/,
      )![0],
    );
    // no config file: the simulated vendor CA was trusted, and the log said so
    // (the sync tool runs above kept this process from reading the daemon's output until now)
    const warning = 'trusting the simulated SE05x vendor CA';
    // (no deadline of its own: the test's time limit ends a wait that never comes)
    while (!daemon.stdout().includes(warning)) await new Promise((r) => setTimeout(r, 25));
    expect(daemon.stdout()).toContain(warning);
    const listed = cli(['el2g', 'devices', '--wide']);
    expect(listed.stdout).toMatch(new RegExp(`fio-935389312472 +${manifest.device} +\\d{4}-\\d\\d-\\d\\dT`));
  });
});

import { execFile, execFileSync } from 'node:child_process';
import { createDecipheriv, createPrivateKey } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgentAsync } from '../../packages/agent/test/support/agent-bin.ts';
import {
  type DaemonProcess,
  PROCESS_TEST_TIMEOUT_MS,
  type RunResult,
  runBin,
  runBinAsync,
  startKeyferryd,
} from '../support/processes.ts';
import { createSofthsmEnv, initTestToken, type SofthsmEnv } from '../support/softhsm.ts';

const PRODUCT = '935389312472';

function openssl(args: string[]): string {
  return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

/** The four sections of fioctl's `el2g status`, built from what the API says. */
function expectedStatus(subdomain: string, caId: number, caPem: string): string {
  return [
    `# Subdomain: ${subdomain}\n`,
    '# Product IDs\n\tID            NAME\n\t--            ----\n\t935389312472  SE050C2HQ1/Z01V3\n',
    '# Secure Objects\n' +
      '\tTYPE         NAME                      OBJECT ID\n' +
      '\t----         ----                      ---------\n' +
      '\tCERTIFICATE  fio-device-gateway-ca     83000043\n' +
      '\tKEYPAIR      fio-device-gateway-ca-kp  83000042\n',
    `# Intermediate CAs\nName: fio-device-gateway-ca\nAlgorithm: NIST_P256\nID: ${caId}\n${caPem}`,
  ].join('\n');
}

interface Setup {
  work: string;
  daemon: DaemonProcess;
  cli(args: string[]): RunResult;
  api<T = any>(path: string): Promise<T>;
}

async function setup(prefix: string, env: NodeJS.ProcessEnv, args: string[] = []): Promise<Setup> {
  const work = mkdtempSync(join(tmpdir(), prefix));
  const daemon = await startKeyferryd(join(work, 'data'), { env, args });
  const token = readFileSync(join(work, 'data', 'demo.token'), 'utf8').trim();
  return {
    work,
    daemon,
    cli: (cliArgs) =>
      runBin('keyferry', ['--server', daemon.listen.api, '-t', token, '-f', 'demo', ...cliArgs], {
        env: { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg'), ...env },
      }),
    // a connection per call: runBin (spawnSync) keeps this process busy past the API's 5 s
    // keep-alive timeout, and a pooled connection would be one keyferryd has closed
    api: (path) =>
      new Promise((resolve, reject) => {
        httpGet(
          `${daemon.listen.api}/ota/factories/demo/${path}`,
          { headers: { 'osf-token': token }, agent: false },
          (res) => {
            let text = '';
            res.on('data', (d) => (text += d));
            res.on('end', () => resolve(JSON.parse(text)));
            res.on('error', reject);
          },
        ).on('error', reject);
      }),
  };
}

/** Runs keys ca create + config-device-gateway + status and checks them as a user would. */
async function configureAndCheck(s: Setup, pkiArgs: string[]): Promise<string> {
  const pki = join(s.work, 'pki');
  // Only the root and TLS: the device CAs below are then exactly those config-device-gateway adds.
  const created = s.cli(['keys', 'ca', 'create', pki, '--online-ca=false', '--local-ca=false', ...pkiArgs]);
  expect(created.stderr).toBe('');
  expect(created.status).toBe(0);
  const res = s.cli(['el2g', 'config-device-gateway', '--pki-dir', pki, ...pkiArgs]);
  expect(res.stderr).toBe('');
  expect(res.status).toBe(0);
  const cas = await s.api<Array<{ id: number; value: string }>>('el2g/intermediate-cas/');
  expect(cas).toHaveLength(1);
  const ca = cas[0]!;
  expect(res.stdout).toBe(
    // fioctl's steps in fioctl's order (its Println after the PEM included), then keyferry's
    "Requesting CSR from keyferry\nSigning CSR\nUploading signed certificate\nUpdating factory allowed CA's with\n" +
      `${ca.value}\n` +
      `Created intermediate CA fio-device-gateway-ca (ID ${ca.id})\n` +
      'The device gateway trusts it now (added to ca-crt)\n',
  );
  const overview = await s.api<{ subdomain: string }>('el2g/overview/');
  expect(overview.subdomain).toMatch(/^[a-z0-9]{16}\.device-link\.localhost$/);
  const status = s.cli(['el2g', 'status']);
  expect(status.stderr).toBe('');
  expect(status.status).toBe(0);
  const expected = expectedStatus(overview.subdomain, ca.id, ca.value);
  expect(status.stdout.slice(0, expected.length)).toBe(expected);
  // sections added later (plan and usage) follow, never change these
  expect(status.stdout.slice(expected.length)).toMatch(/^$|^\n# /);

  // the CA PEM as status printed it verifies against the root in the PKI dir
  const printed =
    /# Intermediate CAs\nName: .*\nAlgorithm: .*\nID: .*\n(-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n)/.exec(
      status.stdout,
    )?.[1];
  expect(printed).toBe(ca.value);
  writeFileSync(join(s.work, 'gateway-ca.pem'), printed!);
  expect(openssl(['verify', '-CAfile', join(pki, 'factory_ca.pem'), join(s.work, 'gateway-ca.pem')])).toBe(
    `${join(s.work, 'gateway-ca.pem')}: OK\n`,
  );
  const text = openssl(['x509', '-in', join(s.work, 'gateway-ca.pem'), '-noout', '-text']);
  expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
  expect(text).toContain('ASN1 OID: prime256v1');
  // the device gateway now trusts it
  const deviceCas = s.cli(['keys', 'ca', 'show', '--just-device-cas']).stdout;
  expect(deviceCas).toBe(ca.value);
  return pki;
}

describe('el2g config-device-gateway + status: root key in a file, soft custody', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  let s: Setup;
  let pki: string;
  beforeAll(async () => {
    s = await setup('keyferry-e2e-el2g-', { KEYFERRY_LOG_LEVEL: 'trace' });
  });
  afterAll(async () => {
    await s?.daemon.stop();
    if (s) rmSync(s.work, { recursive: true, force: true });
  });

  it('prints the four status sections of fioctl and a CA that openssl verifies against factory_ca.pem', async () => {
    pki = await configureAndCheck(s, []);
  });

  it('re-running is safe: new key, same objects, ca-crt keeps the old CA and gains the new one once', async () => {
    const before = await s.api<Array<{ id: number; value: string }>>('el2g/intermediate-cas/');
    const objectsBefore = await s.api('el2g/secure-objects/');
    const res = s.cli(['el2g', 'config-device-gateway', '--pki-dir', pki]);
    expect(res.status).toBe(0);
    expect(res.stdout).toContain(
      `\nReplaced the key and certificate of intermediate CA fio-device-gateway-ca (ID ${before[0]!.id})\n`,
    );
    const after = await s.api<Array<{ id: number; value: string }>>('el2g/intermediate-cas/');
    expect(after).toHaveLength(1);
    expect(after[0]!.id).toBe(before[0]!.id);
    expect(after[0]!.value).not.toBe(before[0]!.value);
    expect(await s.api('el2g/secure-objects/')).toEqual(objectsBefore);
    const bundle = s.cli(['keys', 'ca', 'show', '--just-device-cas']).stdout;
    expect(bundle).toBe(before[0]!.value + after[0]!.value);
  });

  it('refuses incomplete HSM flags before any request, naming the missing ones', async () => {
    const audit = (await s.api('audit/?limit=500')).entries.length;
    const res = s.cli(['el2g', 'config-device-gateway', '--pki-dir', pki, '--hsm-module', '/x.so']);
    expect(res.status).not.toBe(0);
    expect(res.stderr).toBe(
      'ERROR: --hsm-pin and --hsm-token-label missing: the HSM flags --hsm-module, --hsm-pin (or --hsm-pin-file) and --hsm-token-label go together\n',
    );
    expect((await s.api('audit/?limit=500')).entries.length).toBe(audit);
  });

  it('keeps every intermediate CA private key out of the database file, its WAL, the logs and the API', async () => {
    const dataDir = join(s.work, 'data');
    const master = Buffer.from(readFileSync(join(dataDir, 'master.key'), 'utf8').trim(), 'hex');
    const sqlite = new SqliteDatabase(join(dataDir, 'keyferry.db'), { readonly: true });
    const rows = sqlite
      .prepare(
        "select k.id, k.material from custody_keys k join ca_requests r on r.key_ref = k.id where r.ca_name = 'fio-device-gateway-ca'",
      )
      .all() as Array<{ id: string; material: string }>;
    sqlite.close();
    expect(rows.length).toBe(2); // the first run and the re-run
    const secrets: Buffer[] = [];
    for (const row of rows) {
      const blob = Buffer.from(row.material, 'base64');
      const decipher = createDecipheriv('aes-256-gcm', master, blob.subarray(0, 12));
      decipher.setAAD(Buffer.from(row.id));
      decipher.setAuthTag(blob.subarray(12, 28));
      const pkcs8 = Buffer.concat([decipher.update(blob.subarray(28)), decipher.final()]);
      const scalar = Buffer.from(
        createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }).export({ format: 'jwk' }).d as string,
        'base64url',
      );
      expect(scalar.length).toBe(32);
      secrets.push(pkcs8, scalar);
    }
    const apiText = JSON.stringify([
      await s.api('audit/?limit=500'),
      await s.api('el2g/intermediate-cas/'),
      await s.api('el2g-proxy/intermediate-cas'),
      await s.api('certs/'),
    ]);
    const search = (where: string, haystack: Buffer) => {
      for (const secret of secrets) {
        for (const needle of [
          secret,
          Buffer.from(secret.toString('hex')),
          Buffer.from(secret.toString('base64')),
        ]) {
          expect(haystack.includes(needle), `${where} holds a CA private key`).toBe(false);
        }
      }
    };
    const files = () => {
      const found: Array<[string, Buffer]> = [['keyferry.db', readFileSync(join(dataDir, 'keyferry.db'))]];
      if (existsSync(join(dataDir, 'keyferry.db-wal')))
        found.push(['keyferry.db-wal', readFileSync(join(dataDir, 'keyferry.db-wal'))]);
      return found;
    };
    const running = files();
    expect(running.map(([n]) => n)).toContain('keyferry.db-wal');
    for (const [name, bytes] of running) search(name, bytes);
    expect(s.daemon.stderr().length + s.daemon.stdout().length).toBeGreaterThan(1000); // trace logs were captured
    search('keyferryd stdout', Buffer.from(s.daemon.stdout()));
    search('keyferryd stderr', Buffer.from(s.daemon.stderr()));
    search('API answers', Buffer.from(apiText));
    expect(s.daemon.stdout() + s.daemon.stderr() + apiText).not.toContain('PRIVATE KEY');
    // and after the WAL is checkpointed into the database at shutdown
    expect(await s.daemon.stop()).toBe(0);
    for (const [name, bytes] of files()) search(`${name} after stop`, bytes);
  });
});

describe('el2g config-device-gateway + status + device gateway: root key on a SoftHSM2 token, pkcs11 custody', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  let hsm: SofthsmEnv;
  let s: Setup;
  let filePki: Setup;
  /** A simulated device's soft secure element; keyferry-sim keeps its vendor CA beside it. */
  let device: { dir: string; uid: string };
  const rootFlags = () => [
    '--hsm-module',
    hsm.module,
    '--hsm-pin',
    '1234',
    '--hsm-token-label',
    'factory-root',
  ];

  beforeAll(async () => {
    hsm = createSofthsmEnv();
    initTestToken(hsm.conf, { label: 'factory-root', userPin: '1234' });
    initTestToken(hsm.conf, { label: 'keyferryd', userPin: '4321' });
    const work = mkdtempSync(join(tmpdir(), 'keyferry-e2e-el2g-conf-'));
    const deviceDir = mkdtempSync(join(tmpdir(), 'keyferry-e2e-el2g-device-'));
    const created = await runBinAsync(
      'sim',
      ['se05x', 'create', '--product', PRODUCT, '--dir', join(deviceDir, 'se')],
      { env: { KEYFERRY_DATA_DIR: deviceDir } },
    );
    expect(created.stderr).toBe('');
    device = { dir: deviceDir, uid: created.stdout.trim() };
    const configFile = join(work, 'keyferryd.json');
    writeFileSync(
      configFile,
      JSON.stringify({
        keyCustody: { kind: 'pkcs11', module: hsm.module, tokenLabel: 'keyferryd', pin: '4321' },
        // a config file turns the demo factory off unless it says otherwise
        demoFactory: { enabled: true },
        // and trusts no simulated vendor CA unless it names it
        products: [
          {
            nc12: PRODUCT,
            name: 'SE050C2HQ1/Z01V3',
            trustAnchors: [join(deviceDir, 'sim', 'vendor-ca.pem')],
          },
        ],
      }),
      { mode: 0o600 }, // the token PIN is in it
    );
    s = await setup('keyferry-e2e-el2g-hsm-', { SOFTHSM2_CONF: hsm.conf }, ['--config', configFile]);
    rmSync(work, { recursive: true, force: true });
    // a second service with a file root: its PKI dir belongs to another factory
    filePki = await setup('keyferry-e2e-el2g-other-', {});
    expect(filePki.cli(['keys', 'ca', 'create', join(filePki.work, 'pki')]).status).toBe(0);
  });
  afterAll(async () => {
    await s?.daemon.stop();
    await filePki?.daemon.stop();
    for (const x of [s, filePki]) if (x) rmSync(x.work, { recursive: true, force: true });
    if (device) rmSync(device.dir, { recursive: true, force: true });
    hsm?.cleanup();
  });

  it('prints the same status with the root key on a token', async () => {
    const pki = await configureAndCheck(s, rootFlags());
    expect(existsSync(join(pki, 'factory_ca.key'))).toBe(false);
  });

  it('the CA key is a non-extractable key on the service token; the gateway TLS key is not on it', () => {
    const objects = execFileSync(
      'pkcs11-tool',
      [
        '--module',
        hsm.module,
        '--token-label',
        'keyferryd',
        '--login',
        '--pin',
        '4321',
        '-O',
        '--type',
        'privkey',
      ],
      { encoding: 'utf8', env: { ...process.env, SOFTHSM2_CONF: hsm.conf } },
    );
    const sqlite = new SqliteDatabase(join(s.work, 'data', 'keyferry.db'), { readonly: true });
    const rows = sqlite
      .prepare('select id, backend, material, purpose from custody_keys order by backend, purpose')
      .all() as Array<{ id: string; backend: string; material: string; purpose: string }>;
    const gatewayKey = sqlite.prepare('select tls_key_ref from factory_pki').pluck().get() as string;
    sqlite.close();
    // every key on the token is a CA key (the EL2GO intermediate and whatever device CA keys
    // ca create made), never extractable; the gateway TLS key is wrapped by the master key
    const onToken = rows.filter((r) => r.backend === 'pkcs11');
    expect(onToken.map((r) => r.purpose)).toContain('intermediate-ca:demo:fio-device-gateway-ca');
    for (const row of onToken) expect(row.purpose).toMatch(/^(intermediate-ca|online-ca):/);
    const keys = objects.split('Private Key Object').slice(1);
    expect(keys).toHaveLength(onToken.length);
    for (const row of onToken) {
      const listed = keys.find((k) => new RegExp(`label:\\s+${row.material}\\n`).test(k));
      expect(listed, row.purpose).toMatch(/never extractable/);
    }
    expect(rows.filter((r) => r.backend === 'soft')).toEqual([
      expect.objectContaining({ id: gatewayKey, purpose: 'gateway-tls:demo' }),
    ]);
    expect(objects).not.toContain(gatewayKey);
    expect(statSync(join(s.work, 'data', 'master.key')).mode & 0o777).toBe(0o600);
  });

  it('the gateway runs: a device provisioned over the device-link gets its record (curl with its certificate)', async () => {
    expect(s.daemon.listen.gateway).toMatch(/^127\.0\.0\.1:\d+$/);
    const dataDir = join(s.work, 'data');
    const seDir = join(device.dir, 'se');
    const sotaDir = join(device.dir, 'sota');
    mkdirSync(sotaDir, { recursive: true });
    const added = s.cli(['el2g', 'devices', 'add', PRODUCT, device.uid]);
    expect(added.stderr).toBe('');
    writeFileSync(join(device.dir, 'root.crt'), s.cli(['keys', 'ca', 'show', '--just-root']).stdout);
    const subdomain = (await s.api<{ subdomain: string }>('el2g/overview/')).subdomain;
    const repoId = /^demo {2}(\S+)$/m.exec(s.cli(['factories']).stdout)?.[1];
    const envFile = join(device.dir, 'lmp-el2go-auto-register');
    writeFileSync(
      envFile,
      [
        `REPOID=${repoId}`,
        `EL2GO_HOSTNAME=${subdomain}`,
        `EL2GO_CONNECT_ADDR=${s.daemon.listen.deviceLink}`,
        `DEVICE_LINK_CA=${join(dataDir, 'service-ca.pem')}`,
        `ROOT_CRT=${join(device.dir, 'root.crt')}`,
        'SE_BACKEND=soft',
        `SE_DIR=${seDir}`,
        `SOTA_DIR=${sotaDir}`,
        'AKLITE_START_CMD=true',
        '',
      ].join('\n'),
    );
    const agent = await runAgentAsync(['auto-register', '--once', '--env-file', envFile]);
    expect(agent.stderr).toBe('');
    expect(agent.stdout).toContain('Provisioning complete\n');

    // aktualizr-lite's call, played by curl: the device's key and certificate, root.crt
    const host = `${repoId}.ota-lite.localhost`;
    const curl = await new Promise<{ stdout: string; stderr: string }>((resolve) => {
      execFile(
        'curl',
        [
          '--silent',
          '--show-error',
          '--key',
          join(seDir, 'SE_83000042.key.pem'),
          '--cert',
          join(seDir, 'SE_83000043.pem'),
          '--cacert',
          join(device.dir, 'root.crt'),
          '--connect-to',
          `${host}:443:${s.daemon.listen.gateway}`,
          `https://${host}/device`,
        ],
        { encoding: 'utf8' },
        (_error, stdout, stderr) => resolve({ stdout, stderr }),
      );
    });
    expect(curl.stderr).toBe('');
    expect(JSON.parse(curl.stdout)).toMatchObject({ name: device.uid.slice(2), factory: 'demo' });
  });

  it('refuses a wrong HSM PIN for the root key', async () => {
    const pki = join(s.work, 'pki');
    const flags = rootFlags();
    flags[3] = '9999';
    const before = await s.api('el2g/intermediate-cas/');
    const res = s.cli(['el2g', 'config-device-gateway', '--pki-dir', pki, ...flags]);
    expect(res.status).not.toBe(0);
    expect(res.stderr).toMatch(/^ERROR: wrong PIN for token 'factory-root'/);
    expect(await s.api('el2g/intermediate-cas/')).toEqual(before);
  });

  it('refuses a PKI dir of another factory before asking the service for anything', async () => {
    const before = {
      cas: await s.api('el2g/intermediate-cas/'),
      audit: (await s.api('audit/?limit=500')).entries.length,
    };
    const res = s.cli(['el2g', 'config-device-gateway', '--pki-dir', join(filePki.work, 'pki')]);
    expect(res.status).not.toBe(0);
    expect(res.stderr).toBe(
      `ERROR: ${join(filePki.work, 'pki', 'factory_ca.pem')} is not the root CA of factory demo: pass the PKI dir made for this factory (or -f the factory it belongs to)\n`,
    );
    expect(res.stdout).toBe('');
    expect({
      cas: await s.api('el2g/intermediate-cas/'),
      audit: (await s.api('audit/?limit=500')).entries.length,
    }).toEqual(before);
  });
});

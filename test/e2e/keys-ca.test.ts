import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DaemonProcess, runBinAsync, startKeyferryd } from '../support/processes.ts';
import { createSofthsmEnv, initTestToken, type SofthsmEnv } from '../support/softhsm.ts';

const run = promisify(execFile);
const openssl = async (args: string[], env?: NodeJS.ProcessEnv) =>
  (await run('openssl', args, { encoding: 'utf8', ...(env ? { env } : {}) })).stdout;

const FIOCTL_CREATE_LINES = [
  'Creating offline root CA for Factory',
  'Signing keyferry TLS CSR',
  'Signing keyferry CSR for online use',
  'Creating local device CA',
  'Uploading signed certs to keyferry',
];

interface Setup {
  work: string;
  daemon: DaemonProcess;
  host: string;
  cli(args: string[]): ReturnType<typeof runBinAsync>;
  certs(): Promise<any>;
}

async function setup(prefix: string, env: NodeJS.ProcessEnv = {}): Promise<Setup> {
  const work = mkdtempSync(join(tmpdir(), prefix));
  const daemon = await startKeyferryd(join(work, 'data'));
  const token = readFileSync(join(work, 'data', 'demo.token'), 'utf8').trim();
  const cli = (args: string[]) =>
    runBinAsync('keyferry', ['--server', daemon.listen.api, '-t', token, '-f', 'demo', ...args], {
      env: { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg'), ...env },
    });
  const repoId = JSON.parse((await cli(['factories', '--json'])).stdout)[0]['repo-id'];
  return {
    work,
    daemon,
    host: `${repoId}.ota-lite.localhost`,
    cli,
    certs: async () =>
      (
        await fetch(`${daemon.listen.api}/ota/factories/demo/certs/`, { headers: { 'osf-token': token } })
      ).json(),
  };
}

const pemCount = (bundle: string) => bundle.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0;
const decimalSerialOf = async (file: string) =>
  BigInt(`0x${(await openssl(['x509', '-in', file, '-noout', '-serial'])).trim().split('=')[1]}`).toString();

/** A device key and certificate made with openssl alone, signed by a local device CA. */
async function opensslDevice(s: Setup, caPem: string, caKey: string, cn: string) {
  const key = join(s.work, `${cn}.key`);
  const csr = join(s.work, `${cn}.csr`);
  const cert = join(s.work, `${cn}.pem`);
  const ext = join(s.work, 'client.ext');
  writeFileSync(
    ext,
    'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n',
  );
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
  await openssl(['req', '-new', '-key', key, '-subj', `/OU=demo/CN=${cn}`, '-out', csr]);
  await openssl([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    caPem,
    '-CAkey',
    caKey,
    '-set_serial',
    '0x1f2e3d',
    '-days',
    '30',
    '-extfile',
    ext,
    '-out',
    cert,
  ]);
  return { key, cert };
}

/** GET /device on the gateway as aktualizr-lite does, with curl. */
async function curlGateway(s: Setup, device: { key: string; cert: string }, rootCrt: string) {
  const port = s.daemon.listen.gateway!.split(':').pop();
  const args = ['--silent', '--cacert', rootCrt, '--cert', device.cert, '--key', device.key];
  args.push(
    '--resolve',
    `${s.host}:${port}:127.0.0.1`,
    '-w',
    '\n%{http_code}',
    `https://${s.host}:${port}/device`,
  );
  const { stdout } = await run('curl', args, { encoding: 'utf8' }).catch((e) => e as { stdout: string });
  const lines = stdout.split('\n');
  const code = Number(lines.pop());
  return { code, body: JSON.parse(lines.join('\n') || '{}') };
}

/** The certificate the gateway presents for the factory's host name. */
async function servedTlsFingerprint(s: Setup): Promise<string> {
  const port = s.daemon.listen.gateway!.split(':').pop();
  const child = execFile('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', s.host]);
  child.stdin?.end();
  let out = '';
  child.stdout?.on('data', (d) => (out += d));
  await new Promise((r) => child.on('close', r));
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n/.exec(out)![0];
  const file = join(s.work, 'served.pem');
  writeFileSync(file, pem);
  return openssl(['x509', '-in', file, '-noout', '-fingerprint', '-sha256']);
}

describe('keyferry keys ca: fioctl v0.42 command set, root key in a file', () => {
  let s: Setup;
  let pki: string;
  const inPki = (name: string) => join(pki, name);

  beforeAll(async () => {
    s = await setup('keyferry-e2e-keys-ca-');
    pki = join(s.work, 'pki');
  });
  afterAll(async () => {
    await s?.daemon.stop();
    if (s) rmSync(s.work, { recursive: true, force: true });
  });

  it('show before create: fioctl\'s "Factory PKI is not configured" and a non-zero exit', {
    timeout: 120_000,
  }, async () => {
    const res = await s.cli(['keys', 'ca', 'show']);
    expect(res.status).not.toBe(0);
    expect(res.stdout).toBe('');
    expect(res.stderr).toBe('ERROR: Factory PKI is not configured. Please, see `keyferry keys ca create`.\n');
  });

  it("create prints fioctl's steps and makes the root, TLS, online and local device CAs", {
    timeout: 120_000,
  }, async () => {
    // fioctl's boolean flags take no value in the next word (was: --local-ca takes true or false, not "<pki>")
    const res = await s.cli(['keys', 'ca', 'create', '--online-ca', '--local-ca', pki]);
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    expect(res.stdout).toBe(`${FIOCTL_CREATE_LINES.join('\n')}\n`);
    for (const f of [
      'factory_ca.key',
      'factory_ca.pem',
      'tls-crt',
      'online-crt',
      'local-ca.key',
      'local-ca.pem',
    ]) {
      expect(statSync(inPki(f)).mode & 0o777, f).toBe(0o400);
    }
    for (const f of ['tls-crt', 'online-crt', 'local-ca.pem']) {
      expect(await openssl(['verify', '-CAfile', inPki('factory_ca.pem'), inPki(f)])).toBe(
        `${inPki(f)}: OK\n`,
      );
    }
    const local = await openssl(['x509', '-in', inPki('local-ca.pem'), '-noout', '-text']);
    expect(local).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    const certs = await s.certs();
    expect(certs['ca-crt']).toBe(
      readFileSync(inPki('online-crt'), 'utf8') + readFileSync(inPki('local-ca.pem'), 'utf8'),
    );
    const again = await s.cli(['keys', 'ca', 'create', join(s.work, 'pki2')]);
    expect(again.status).not.toBe(0);
    expect(again.stderr).toMatch(/^ERROR: factory demo already has a root CA .*\(pki_exists\)\n$/);
    expect(existsSync(join(s.work, 'pki2'))).toBe(false);
  });

  it("show prints fioctl's sections in fioctl's order", { timeout: 120_000 }, async () => {
    const res = await s.cli(['keys', 'ca', 'show']);
    expect(res.status).toBe(0);
    const certs = await s.certs();
    const meta = certs['change-meta'];
    expect(res.stdout).toBe(
      `## Change Metadata\nCreated at: ${meta['created-at']}\nCreated by: ${meta['created-by']}\n` +
        `Updated at: ${meta['updated-at']}\nUpdated by: ${meta['updated-by']}\n` +
        `## Factory root certificate\n${certs['root-crt']}\n` +
        `## Server TLS Certificate\n${certs['tls-crt']}\n` +
        `\n## Device Authentication Certificate(s)\n${certs['ca-crt']}\n`,
    );
    expect((await s.cli(['keys', 'ca', 'show', '--just-device-cas'])).stdout).toBe(certs['ca-crt']);
  });

  it('add-device-ca: a second local CA by name, a new online CA (the old one kept, online-crt.bak)', {
    timeout: 120_000,
  }, async () => {
    const neither = await s.cli(['keys', 'ca', 'add-device-ca', pki]);
    expect(neither.stderr).toBe('ERROR: At least one of --online-ca or --local-ca must be true\n');
    const exists = await s.cli(['keys', 'ca', 'add-device-ca', pki, '--local-ca']);
    expect(exists.stderr).toContain('local-ca.pem already exists: name another with --local-ca-filename');
    expect(pemCount((await s.certs())['ca-crt'])).toBe(2);

    const local2 = await s.cli([
      'keys',
      'ca',
      'add-device-ca',
      pki,
      '--local-ca',
      '--local-ca-filename',
      'line-2.pem',
    ]);
    expect(local2.stderr).toBe('');
    expect(local2.stdout).toBe(
      'Fetching a list of existing device CAs\nCreating local device CA\nUploading signed certs to keyferry\n',
    );
    expect(statSync(inPki('line-2.key')).mode & 0o777).toBe(0o400);
    const online = await s.cli(['keys', 'ca', 'add-device-ca', pki, '--online-ca']);
    expect(online.stderr).toBe('');
    expect(online.stdout).toContain(
      'Moving existing online device CA file from online-crt to online-crt.bak\n',
    );
    const bundle = (await s.certs())['ca-crt'];
    expect(pemCount(bundle)).toBe(4);
    expect(bundle).toContain(readFileSync(inPki('online-crt.bak'), 'utf8'));
    expect(bundle).toContain(readFileSync(inPki('online-crt'), 'utf8'));
  });

  it('revoke-device-ca: a CRL the root signs; the gateway refuses a device of that CA at once (curl)', {
    timeout: 120_000,
  }, async () => {
    const rootCrt = join(s.work, 'root.crt');
    writeFileSync(rootCrt, (await s.cli(['keys', 'ca', 'show', '--just-root'])).stdout);
    const device = await opensslDevice(s, inPki('local-ca.pem'), inPki('local-ca.key'), 'line1-device');
    const before = await curlGateway(s, device, rootCrt);
    expect(before.code).toBe(200);
    expect(before.body.name).toBe('line1-device');

    const unknown = await s.cli(['keys', 'ca', 'revoke-device-ca', pki, '--ca-serial', '123']);
    expect(unknown.stderr).toBe('ERROR: There is no actual device CA with serial 123\n');
    const dry = await s.cli([
      'keys',
      'ca',
      'revoke-device-ca',
      pki,
      '--ca-file',
      'local-ca.pem',
      '--dry-run',
      '--pretty',
    ]);
    expect(dry.status).toBe(0);
    const crl = /-----BEGIN X509 CRL-----[\s\S]*?-----END X509 CRL-----\n/.exec(dry.stdout)![0];
    writeFileSync(join(s.work, 'dry.crl'), crl);
    const text = await openssl([
      'crl',
      '-in',
      join(s.work, 'dry.crl'),
      '-CAfile',
      inPki('factory_ca.pem'),
      '-noout',
      '-text',
    ]);
    const serial = await decimalSerialOf(inPki('local-ca.pem'));
    expect(text).toContain('Privilege Withdrawn');
    expect(dry.stdout).toContain(`\t\tSerial: ${serial}\n`);
    expect(pemCount((await s.certs())['ca-crt'])).toBe(4); // a dry run uploads nothing
    // --json: the CRL in JSON, not the bare PEM (was: --json ignored)
    const dryJson = await s.cli([
      '--json',
      'keys',
      'ca',
      'revoke-device-ca',
      pki,
      '--ca-file',
      'local-ca.pem',
      '--dry-run',
    ]);
    expect(dryJson.stderr).toBe('');
    expect(JSON.parse(dryJson.stdout)).toEqual({
      'ca-revoke-crl': expect.stringMatching(/^-----BEGIN X509 CRL-----\n[\s\S]*-----END X509 CRL-----\n$/),
      serials: [serial],
      'dry-run': true,
    });

    const res = await s.cli(['keys', 'ca', 'revoke-device-ca', pki, '--ca-file', 'local-ca.pem']);
    expect(res.stderr).toBe('');
    expect(res.stdout).toBe(
      'Generating Certificate Revocation List\nSigning CRL by factory root CA\nUploading CRL to keyferry\n',
    );
    const certs = await s.certs();
    expect(pemCount(certs['ca-crt'])).toBe(3);
    expect(certs['ca-revoke-crl']).toContain('-----BEGIN X509 CRL-----');
    const after = await curlGateway(s, device, rootCrt);
    expect([after.code, after.body.code]).toEqual([403, 'certificate_revoked']);
    expect(after.body.detail).toContain(`serial ${serial}`);
  });

  it("disable-device-ca --serial: listed under fioctl's disabled header by show", {
    timeout: 120_000,
  }, async () => {
    const serial = await decimalSerialOf(inPki('line-2.pem'));
    const dryJson = await s.cli([
      '--json',
      'keys',
      'ca',
      'disable-device-ca',
      pki,
      '--serial',
      serial,
      '--dry-run',
    ]);
    expect(JSON.parse(dryJson.stdout)).toMatchObject({ serials: [serial], 'dry-run': true });
    expect((await s.certs())['disabled-ca-serials'] ?? []).toEqual([]);
    const res = await s.cli(['keys', 'ca', 'disable-device-ca', pki, '--serial', serial]);
    expect(res.stderr).toBe('');
    expect((await s.certs())['disabled-ca-serials']).toEqual([serial]);
    const show = await s.cli(['keys', 'ca', 'show']);
    expect(
      show.stdout.endsWith(`\n## Disabled Device Authentication Certificate Serial(s)\n -  ${serial}\n`),
    ).toBe(true);
  });

  it('rotate-tls: the gateway presents the new certificate, the old one kept as tls-crt.bak', {
    timeout: 120_000,
  }, async () => {
    const oldFingerprint = await servedTlsFingerprint(s);
    expect(oldFingerprint).toBe(
      await openssl(['x509', '-in', inPki('tls-crt'), '-noout', '-fingerprint', '-sha256']),
    );
    const res = await s.cli(['keys', 'ca', 'rotate-tls', pki]);
    expect(res.stderr).toBe('');
    expect(res.stdout).toBe(
      'Requesting new keyferry TLS CSR\nMoving existing TLS cert file from tls-crt to tls-crt.bak\nSigning keyferry TLS CSR\nUploading signed certs to keyferry\n',
    );
    const served = await servedTlsFingerprint(s);
    expect(served).not.toBe(oldFingerprint);
    expect(served).toBe(
      await openssl(['x509', '-in', inPki('tls-crt'), '-noout', '-fingerprint', '-sha256']),
    );
    expect(existsSync(inPki('tls-crt.bak'))).toBe(true);
  });

  it('update refuses a blank bundle, naming the flag that means it', { timeout: 120_000 }, async () => {
    const before = await s.certs();
    writeFileSync(join(s.work, 'blank.pem'), '\n');
    const res = await s.cli(['keys', 'ca', 'update', join(s.work, 'blank.pem')]);
    expect(res.status).not.toBe(0);
    expect(res.stderr).toMatch(
      /^ERROR: ca-crt is empty: that would remove all 3 device CA\(s\).*--remove-device-cas.*\(conflict\)\n$/,
    );
    expect(await s.certs()).toEqual(before);
  });

  it('update --json prints what it uploaded (was: nothing)', { timeout: 120_000 }, async () => {
    const before = await s.certs();
    writeFileSync(join(s.work, 'same.pem'), before['ca-crt']);
    const res = await s.cli(['--json', 'keys', 'ca', 'update', join(s.work, 'same.pem')]);
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({ 'ca-crt': before['ca-crt'], 'remove-device-cas': false });
    expect((await s.certs())['ca-crt']).toBe(before['ca-crt']);
  });
});

describe('keyferry keys ca with the root key on a SoftHSM2 token', () => {
  let s: Setup;
  let hsm: SofthsmEnv;
  let pki: string;
  let flags: string[];

  beforeAll(async () => {
    hsm = createSofthsmEnv();
    initTestToken(hsm.conf, { label: 'factory-root', userPin: '1234' });
    s = await setup('keyferry-e2e-keys-ca-hsm-', { SOFTHSM2_CONF: hsm.conf });
    pki = join(s.work, 'pki');
    // the PIN from a file, never on the command line (ps shows a command line to every user)
    const pinFile = join(s.work, 'hsm.pin');
    writeFileSync(pinFile, '1234\n', { mode: 0o600 });
    flags = ['--hsm-module', hsm.module, '--hsm-pin-file', pinFile, '--hsm-token-label', 'factory-root'];
  });
  afterAll(async () => {
    await s?.daemon.stop();
    hsm?.cleanup();
    if (s) rmSync(s.work, { recursive: true, force: true });
  });

  it('create --online-ca=false --local-ca=false, then add-device-ca, revoke-device-ca and rotate-tls sign on the token', {
    timeout: 180_000,
  }, async () => {
    const created = await s.cli([
      'keys',
      'ca',
      'create',
      pki,
      '--online-ca=false',
      '--local-ca=false',
      ...flags,
    ]);
    expect(created.stderr).toBe('');
    expect(created.stdout).toBe(
      'Creating offline root CA for Factory\nSigning keyferry TLS CSR\nUploading signed certs to keyferry\n',
    );
    expect(existsSync(join(pki, 'factory_ca.key'))).toBe(false);
    expect((await s.certs())['ca-crt']).toBe('');

    const noFlags = await s.cli(['keys', 'ca', 'add-device-ca', pki, '--local-ca']);
    expect(noFlags.stderr).toMatch(/^ERROR: no root key at .*factory_ca\.key: .*--hsm-\* flags/);
    const added = await s.cli(['keys', 'ca', 'add-device-ca', pki, '--local-ca', '--online-ca', ...flags]);
    expect(added.stderr).toBe('');
    expect(pemCount((await s.certs())['ca-crt'])).toBe(2);
    for (const f of ['local-ca.pem', 'online-crt']) {
      expect(await openssl(['verify', '-CAfile', join(pki, 'factory_ca.pem'), join(pki, f)])).toBe(
        `${join(pki, f)}: OK\n`,
      );
    }
    const revoked = await s.cli(['keys', 'ca', 'revoke-device-ca', pki, '--ca-file', 'online-crt', ...flags]);
    expect(revoked.stderr).toBe('');
    expect((await s.certs())['ca-crt']).toBe(readFileSync(join(pki, 'local-ca.pem'), 'utf8'));
    const rotated = await s.cli(['keys', 'ca', 'rotate-tls', pki, ...flags]);
    expect(rotated.stderr).toBe('');
    expect(await openssl(['verify', '-CAfile', join(pki, 'factory_ca.pem'), join(pki, 'tls-crt')])).toBe(
      `${join(pki, 'tls-crt')}: OK\n`,
    );
    const show = await s.cli(['keys', 'ca', 'show']);
    expect(show.stdout).toContain('## Factory root certificate\n');
  });
});

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DaemonProcess, PROCESS_TEST_TIMEOUT_MS, runBin, startKeyferryd } from '../support/processes.ts';
import { createSofthsmEnv, initTestToken, type SofthsmEnv } from '../support/softhsm.ts';

function openssl(args: string[], input?: string): string {
  return execFileSync('openssl', args, {
    encoding: 'utf8',
    input: input ?? '',
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

/** The foundation "Done when": real keyferryd process, real CLI, openssl as the independent checker. */
describe('keyferryd + keyferry CLI: factories and the factory PKI', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  let work: string;
  let daemon: DaemonProcess;
  let token: string;
  let cli: (args: string[], env?: NodeJS.ProcessEnv) => ReturnType<typeof runBin>;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-e2e-'));
    daemon = await startKeyferryd(join(work, 'data'));
    token = readFileSync(join(work, 'data', 'demo.token'), 'utf8').trim();
    // an isolated HOME so no login file of the machine leaks in; the server read at each call
    cli = (args, env) =>
      runBin('keyferry', ['--server', daemon.listen.api, '-t', token, ...args], {
        env: { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg'), ...env },
      });
  });
  afterAll(async () => {
    await daemon?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('prints where the demo token is, never the token, and keeps it 0600', () => {
    expect(daemon.stdout()).toContain('Demo factory: demo');
    expect(daemon.stdout()).not.toContain(token.slice('kf_0123456789abcdef_'.length));
    expect(statSync(join(work, 'data', 'demo.token')).mode & 0o777).toBe(0o600);
    expect(statSync(join(work, 'data', 'master.key')).mode & 0o777).toBe(0o600);
  });

  it('lists the demo factory with its repo id', () => {
    const res = cli(['factories']);
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    const lines = res.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME {2}REPO ID$/);
    expect(lines[1]).toBe('----  -------');
    expect(lines[2]).toMatch(/^demo {2}[a-z0-9]{10}$/);
    const json = JSON.parse(cli(['factories', '--json']).stdout);
    expect(json[0].name).toBe('demo');
  });

  it('refuses a wrong token with one ERROR line and no stack trace', () => {
    const res = runBin('keyferry', ['--server', daemon.listen.api, '-t', 'kf_nope', 'factories'], {
      env: { HOME: work },
    });
    expect(res.status).not.toBe(0);
    expect(res.stderr).toMatch(/^ERROR: the API token is not valid.*\(unauthenticated\)\n$/);
    expect(res.stderr).not.toContain('    at ');
  });

  it('creates the offline root, signs the gateway TLS cert, and shows them as openssl expects', () => {
    const pki = join(work, 'pki');
    const res = cli(['-f', 'demo', 'keys', 'ca', 'create', pki]);
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    expect(res.stdout).toContain('Creating offline root CA for Factory\nSigning keyferry TLS CSR\n');
    expect(res.stdout).toContain('Uploading signed certs to keyferry\n');
    for (const f of ['factory_ca.key', 'factory_ca.pem', 'tls-crt']) {
      expect(statSync(join(pki, f)).mode & 0o777, f).toBe(0o400);
    }
    const root = cli(['-f', 'demo', 'keys', 'ca', 'show', '--just-root']);
    expect(root.status).toBe(0);
    writeFileSync(join(work, 'root.crt'), root.stdout);
    expect(root.stdout).toBe(readFileSync(join(pki, 'factory_ca.pem'), 'utf8'));
    const text = openssl(['x509', '-in', join(work, 'root.crt'), '-noout', '-text']);
    expect(text).toMatch(
      /Subject: .*OU ?= ?demo.*CN ?= ?Factory-CA|Subject: .*CN ?= ?Factory-CA.*OU ?= ?demo/,
    );
    expect(text).toContain('ASN1 OID: prime256v1');
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE/);
    expect(text).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    const dates = openssl(['x509', '-in', join(work, 'root.crt'), '-noout', '-startdate', '-enddate']);
    const start = new Date(/notBefore=(.*)/.exec(dates)![1]!);
    const end = new Date(/notAfter=(.*)/.exec(dates)![1]!);
    expect(end.getUTCFullYear() - start.getUTCFullYear()).toBe(20);

    const tls = cli(['-f', 'demo', 'keys', 'ca', 'show', '--just-tls']);
    writeFileSync(join(work, 'tls.pem'), tls.stdout);
    expect(openssl(['verify', '-CAfile', join(work, 'root.crt'), join(work, 'tls.pem')])).toContain(': OK');
    const repoId = JSON.parse(cli(['factories', '--json']).stdout)[0]['repo-id'];
    expect(openssl(['x509', '-in', join(work, 'tls.pem'), '-noout', '-ext', 'subjectAltName'])).toContain(
      `DNS:${repoId}.ota-lite.localhost`,
    );

    const all = cli(['-f', 'demo', 'keys', 'ca', 'show']);
    expect(all.stdout).toContain('## Factory root certificate\n');
    const pretty = cli(['-f', 'demo', 'keys', 'ca', 'show', '--just-root', '--pretty']);
    expect(pretty.stdout).toContain('Subject:');
    expect(pretty.stdout).toContain('Factory-CA');
    expect(pretty.stdout).toContain('CA:         yes');
  });

  it('refuses to make a second PKI, or one into a non-empty dir, and changes nothing', () => {
    const before = cli(['-f', 'demo', 'keys', 'ca', 'show', '--json']).stdout;
    const again = cli(['-f', 'demo', 'keys', 'ca', 'create', join(work, 'pki2')]);
    expect(again.status).not.toBe(0);
    expect(again.stderr).toMatch(/^ERROR: factory demo already has a root CA/);
    expect(existsSync(join(work, 'pki2', 'factory_ca.key'))).toBe(false);
    const busy = join(work, 'busy');
    mkdirSync(busy);
    writeFileSync(join(busy, 'notes.txt'), 'x');
    const nonEmpty = cli(['-f', 'demo', 'keys', 'ca', 'create', busy]);
    expect(nonEmpty.status).not.toBe(0);
    expect(nonEmpty.stderr).toMatch(/^ERROR: .*busy is not empty/);
    // a file where the PKI dir should go (was: ENOTDIR: not a directory, scandir)
    const file = join(busy, 'notes.txt');
    expect(cli(['-f', 'demo', 'keys', 'ca', 'create', file])).toEqual({
      status: 1,
      stdout: '',
      stderr: `ERROR: ${file} is a file, not a directory: keys ca create writes a PKI dir; name a new directory\n`,
    });
    expect(cli(['-f', 'demo', 'keys', 'ca', 'show', '--json']).stdout).toBe(before);
  });

  it('refuses conflicting show flags naming both, and incomplete HSM flags naming the missing ones', () => {
    const both = cli(['-f', 'demo', 'keys', 'ca', 'show', '--just-root', '--just-tls']);
    expect(both.status).not.toBe(0);
    expect(both.stderr).toMatch(/^ERROR: .*--just-root.*--just-tls|^ERROR: .*--just-tls.*--just-root/);
    const hsm = cli(['-f', 'demo', 'keys', 'ca', 'create', join(work, 'pki3'), '--hsm-module', '/x.so']);
    expect(hsm.status).not.toBe(0);
    expect(hsm.stderr).toContain('--hsm-pin and --hsm-token-label missing');
  });

  it('stops cleanly on SIGTERM and does not print a token again on restart', async () => {
    expect(await daemon.stop()).toBe(0);
    daemon = await startKeyferryd(join(work, 'data'));
    expect(daemon.stdout()).not.toContain('Admin token');
    const res = cli(['factories']);
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
  });
});

describe('keys ca create with the root key on a SoftHSM2 token', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let work: string;
  let hsm: SofthsmEnv;
  let daemon: DaemonProcess;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-e2e-hsm-'));
    hsm = createSofthsmEnv();
    initTestToken(hsm.conf, { label: 'factory-root', userPin: '1234' });
    daemon = await startKeyferryd(join(work, 'data'));
  });
  afterAll(async () => {
    await daemon?.stop();
    hsm?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it('keeps the root key on the token, non-extractable, and the chain verifies', () => {
    const token = readFileSync(join(work, 'data', 'demo.token'), 'utf8').trim();
    const env = { HOME: work, SOFTHSM2_CONF: hsm.conf };
    const base = ['--server', daemon.listen.api, '-t', token, '-f', 'demo'];
    const pki = join(work, 'pki');
    const hsmFlags = ['--hsm-module', hsm.module, '--hsm-pin', '1234', '--hsm-token-label', 'factory-root'];
    const wrongPin = runBin(
      'keyferry',
      [
        ...base,
        'keys',
        'ca',
        'create',
        join(work, 'pkiX'),
        ...hsmFlags.slice(0, 3),
        '9999',
        ...hsmFlags.slice(4),
      ],
      { env },
    );
    expect(wrongPin.status).not.toBe(0);
    expect(wrongPin.stderr).toMatch(/^ERROR: .*PIN/i);
    const res = runBin('keyferry', [...base, 'keys', 'ca', 'create', pki, ...hsmFlags], { env });
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    expect(existsSync(join(pki, 'factory_ca.key'))).toBe(false);
    const objects = execFileSync(
      'pkcs11-tool',
      ['--module', hsm.module, '--token-label', 'factory-root', '--login', '--pin', '1234', '-O'],
      {
        encoding: 'utf8',
        env: { ...process.env, SOFTHSM2_CONF: hsm.conf },
      },
    );
    expect(objects).toMatch(/Private Key Object; EC[\s\S]*label:\s+root-ca[\s\S]*never extractable/);
    const root = runBin('keyferry', [...base, 'keys', 'ca', 'show', '--just-root'], { env }).stdout;
    const tls = runBin('keyferry', [...base, 'keys', 'ca', 'show', '--just-tls'], { env }).stdout;
    writeFileSync(join(work, 'root.crt'), root);
    writeFileSync(join(work, 'tls.pem'), tls);
    expect(openssl(['verify', '-CAfile', join(work, 'root.crt'), join(work, 'tls.pem')])).toContain(': OK');
  });
});

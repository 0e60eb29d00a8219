import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../../packages/agent/src/agent-error.ts';
import { runAgent, runAgentAsync } from '../../packages/agent/test/support/agent-bin.ts';
import { startLikeSystemd } from '../../packages/agent/test/support/systemd-unit.ts';
import { writeAgentEnvFile } from '../support/device-link.ts';
import {
  type DaemonProcess,
  PROCESS_TEST_TIMEOUT_MS,
  type RunResult,
  runBin,
  runBinAsync,
  startKeyferryd,
} from '../support/processes.ts';
import { createSofthsmEnv, type SofthsmEnv } from '../support/softhsm.ts';

const PRODUCT = '935389312472';
const PIN = '87654321';

/** One simulated device: its own SoftHSM2 store holding an `aktualizr` token made by keyferry-sim. */
interface Device {
  softhsm: SofthsmEnv;
  uid: string;
  sotaDir: string;
  envFile: string;
  akliteLog: string;
  agent(args: string[], env?: NodeJS.ProcessEnv): RunResult;
  pkcs11Tool(args: string[]): string;
}

describe('keyferry-agent auto-register against the real keyferryd (SoftHSM2 token made by keyferry-sim)', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  let work: string;
  let dataDir: string;
  let daemon: DaemonProcess;
  let pki: string;
  let repoId: string;
  let subdomain: string;
  const devices: Device[] = [];
  let deviceA: Device;
  let cli: (args: string[]) => RunResult;
  let adminToken: string;

  async function makeDevice(name: string, seDir?: string): Promise<Device> {
    const softhsm = createSofthsmEnv({ setProcessEnv: false });
    const where = seDir === undefined ? ['--pkcs11'] : ['--dir', seDir];
    const created = runBin('sim', ['se05x', 'create', '--product', PRODUCT, ...where], {
      env: { SOFTHSM2_CONF: softhsm.conf, KEYFERRY_DATA_DIR: dataDir },
    });
    expect(created.stderr).toBe('');
    expect(created.status).toBe(0);
    const uid = created.stdout.trim();
    expect(uid).toMatch(/^0x04005001[0-9a-f]{28}$/);
    const sotaDir = join(work, name, 'sota');
    mkdirSync(sotaDir, { recursive: true });
    const akliteLog = join(work, name, 'aklite.log');
    const envFile = join(work, name, 'lmp-el2go-auto-register');
    writeAgentEnvFile(envFile, {
      repoId,
      subdomain,
      deviceLinkAddress: daemon.listen.deviceLink!,
      dataDir,
      pkcs11Module: softhsm.module,
      sotaDir,
      rootCrt: join(work, 'root.crt'),
      akliteStartCmd: `"echo started >> ${akliteLog}"`,
      extra: seDir === undefined ? [] : ['SE_BACKEND=soft', `SE_DIR=${seDir}`],
    });
    const device: Device = {
      softhsm,
      uid,
      sotaDir,
      envFile,
      akliteLog,
      agent: (args, env = {}) =>
        runAgent([...args, '--env-file', envFile], { SOFTHSM2_CONF: softhsm.conf, ...env }),
      pkcs11Tool: (args) =>
        execFileSync(
          'pkcs11-tool',
          ['--module', softhsm.module, '--token-label', 'aktualizr', '--login', '--pin', PIN, ...args],
          { env: softhsm.env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
        ),
    };
    devices.push(device);
    return device;
  }

  /** The pkcs11-tool block of one object, by kind and label. */
  function block(listing: string, kind: string, label: string): string {
    return (
      listing
        .split(/\n(?=\S)/)
        .map((b) => `${b.trimEnd()}\n`)
        .find((b) => b.startsWith(kind) && b.includes(`label:      ${label}\n`)) ?? ''
    );
  }

  function showDevice(uid: string): string {
    const res = cli(['el2g', 'devices', 'show', uid]);
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    return res.stdout;
  }

  function certificateIn(show: string): string {
    const pem =
      /Certificates:\n# fio-device-gateway-ca\n(-----BEGIN CERTIFICATE-----\n[\s\S]*?-----END CERTIFICATE-----\n)/.exec(
        show,
      )?.[1];
    expect(pem, show).toBeDefined();
    return pem!;
  }

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-e2e-agent-'));
    dataDir = join(work, 'data');
    daemon = await startKeyferryd(dataDir);
    const token = readFileSync(join(dataDir, 'demo.token'), 'utf8').trim();
    adminToken = token;
    cli = (args) =>
      runBin('keyferry', ['--server', daemon.listen.api, '-t', token, '-f', 'demo', ...args], {
        env: { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg') },
      });
    pki = join(work, 'pki');
    for (const step of [
      ['keys', 'ca', 'create', pki],
      ['el2g', 'config-device-gateway', '--pki-dir', pki],
    ]) {
      const res = cli(step);
      expect(res.stderr, step.join(' ')).toBe('');
      expect(res.status, step.join(' ')).toBe(0);
    }
    const root = cli(['keys', 'ca', 'show', '--just-root']);
    writeFileSync(join(work, 'root.crt'), root.stdout);
    subdomain = /^# Subdomain: (\S+)$/m.exec(cli(['el2g', 'status']).stdout)?.[1] ?? '';
    expect(subdomain).toMatch(/^[a-z0-9]{16}\.device-link\.localhost$/);
    repoId = /^demo {2}(\S+)$/m.exec(cli(['factories']).stdout)?.[1] ?? '';
    expect(repoId).not.toBe('');
  });

  afterAll(async () => {
    await daemon?.stop();
    for (const d of devices) d.softhsm.cleanup();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  describe('a device that boots, is allow-listed, and provisions', () => {
    let device: Device;
    let sotaToml: string;
    beforeAll(async () => {
      device = deviceA = await makeDevice('device-a');
    });

    it('before it is allow-listed, with --once: names the device id to add, exits not_allowlisted, writes nothing', () => {
      const objectsBefore = device.pkcs11Tool(['--list-objects']);
      const res = device.agent(['auto-register', '--once']);
      expect(res.stderr).toMatch(
        new RegExp(
          `^ERROR: device ${device.uid} is not on the factory's allow-list \\(.*\\); ` +
            `add it with: keyferry el2g devices add ${PRODUCT} ${device.uid}\n$`,
        ),
      );
      expect(res.status).toBe(EXIT_CODES.not_allowlisted);
      expect(existsSync(join(device.sotaDir, 'sota.toml'))).toBe(false);
      expect(existsSync(device.akliteLog)).toBe(false);
      expect(device.pkcs11Tool(['--list-objects'])).toBe(objectsBefore);
    });

    it('provisions both gateway objects after `el2g devices add`, then starts aktualizr-lite', () => {
      const uidLine = device.agent(['uid']);
      expect(uidLine.stdout).toBe(`Unique ID: ${device.uid.slice(2)}\n`);
      const added = cli(['el2g', 'devices', 'add', PRODUCT, device.uid]);
      expect(added.stderr).toBe('');
      expect(added.status).toBe(0);

      const res = device.agent(['auto-register']);
      expect(res.stderr).toBe('');
      expect(res.status).toBe(0);
      const lines = res.stdout.trimEnd().split('\n');
      expect(lines).toEqual([
        `Secure element: token 'aktualizr' in ${device.softhsm.module}`,
        `Connecting to ${daemon.listen.deviceLink} (${subdomain}) as device ${device.uid}`,
        `Manifest: 1 key pair(s) assigned to fio-${PRODUCT}: fio-device-gateway-ca-kp/fio-device-gateway-ca`,
        'fio-device-gateway-ca-kp: generated key SE_83000042 in the secure element',
        expect.stringMatching(/^fio-device-gateway-ca: enrolled, certificate serial [0-9a-f]+ from .*CN=/),
        'fio-device-gateway-ca: stored certificate as SE_83000043',
        'Reported fio-device-gateway-ca-kp, fio-device-gateway-ca as provisioned',
        `${device.sotaDir}/sota.toml written`,
        'Provisioning complete',
        `Starting aktualizr-lite: echo started >> ${device.akliteLog}`,
      ]);
      expect(readFileSync(device.akliteLog, 'utf8')).toBe('started\n');
    });

    it('el2g devices show: both objects PROVISIONING_COMPLETED, a certificate that chains to factory_ca.pem', () => {
      const show = showDevice(device.uid);
      expect(show).toContain(
        'Secure Objects:\n' +
          '\tNAME                      TYPE         STATUS\n' +
          '\t----                      ----         ------\n' +
          '\tfio-device-gateway-ca-kp  KEYPAIR      PROVISIONING_COMPLETED\n' +
          '\tfio-device-gateway-ca     CERTIFICATE  PROVISIONING_COMPLETED\n',
      );
      const pem = certificateIn(show);
      writeFileSync(join(work, 'device-a.pem'), pem);
      writeFileSync(join(work, 'gateway-ca.pem'), cli(['keys', 'ca', 'show', '--just-device-cas']).stdout);
      const verified = spawnSync(
        'openssl',
        [
          'verify',
          '-CAfile',
          join(pki, 'factory_ca.pem'),
          '-untrusted',
          join(work, 'gateway-ca.pem'),
          join(work, 'device-a.pem'),
        ],
        { encoding: 'utf8' },
      );
      expect(verified.stdout).toBe(`${join(work, 'device-a.pem')}: OK\n`);
      const text = execFileSync(
        'openssl',
        ['x509', '-in', join(work, 'device-a.pem'), '-noout', '-subject'],
        {
          encoding: 'utf8',
        },
      );
      expect(text).toContain(`CN = ${device.uid.slice(2)}`);
    });

    it('the token holds SE_83000042 (non-extractable, id 01) and SE_83000043 (id 03), the certificate shown', () => {
      const listing = device.pkcs11Tool(['--list-objects']);
      const key = block(listing, 'Private Key Object', 'SE_83000042');
      expect(key).toMatch(/ID:\s+01\n/);
      expect(key).toMatch(/Access:\s+sensitive, always sensitive, never extractable, local\n/);
      expect(block(listing, 'Certificate Object', 'SE_83000043')).toMatch(/ID:\s+03\n/);
      const der = join(work, 'device-a.der');
      device.pkcs11Tool(['--read-object', '--type', 'cert', '--label', 'SE_83000043', '--output-file', der]);
      const fromToken = execFileSync('openssl', ['x509', '-inform', 'DER', '-in', der], { encoding: 'utf8' });
      expect(fromToken).toBe(readFileSync(join(work, 'device-a.pem'), 'utf8'));
    });

    it('writes sota.toml as aktualizr-lite expects', () => {
      sotaToml = readFileSync(join(device.sotaDir, 'sota.toml'), 'utf8');
      const server = `https://${repoId}.ota-lite.localhost:8443`;
      for (const line of [
        `[tls]\nserver = "${server}"\nca_source = "file"\npkey_source = "pkcs11"\ncert_source = "pkcs11"\n`,
        `[provision]\nserver = "${server}"\n`,
        `[uptane]\nrepo_server = "${server}/repo"\nkey_source = "file"\n`,
        `ostree_server = "https://${repoId}.ostree.localhost:8443/ostree"\n`,
        `[storage]\ntype = "sqlite"\npath = "${device.sotaDir}/"\n`,
        `[import]\ntls_cacert_path = "${join(work, 'root.crt')}"\n`,
        `[p11]\nmodule = "${device.softhsm.module}"\npass = "${PIN}"\ntls_pkey_id = "01"\ntls_clientcert_id = "03"\n`,
      ]) {
        expect(sotaToml).toContain(line);
      }
      expect(statSync(join(device.sotaDir, 'sota.toml')).mode & 0o777).toBe(0o600);
    });

    it('a second run changes nothing and says so', () => {
      const objects = device.pkcs11Tool(['--list-objects']);
      const before = statSync(join(device.sotaDir, 'sota.toml'));
      const show = showDevice(device.uid);
      const res = device.agent(['auto-register']);
      expect(res.stderr).toBe('');
      expect(res.status).toBe(0);
      expect(res.stdout).toContain(
        'fio-device-gateway-ca-kp: key SE_83000042 already in the secure element, kept\n',
      );
      expect(res.stdout).toMatch(
        /fio-device-gateway-ca: certificate SE_83000043 already stored \(serial [0-9a-f]+\), kept\n/,
      );
      expect(res.stdout).toContain(`${device.sotaDir}/sota.toml unchanged\n`);
      expect(res.stdout).toContain(
        'Nothing to do: every assigned key pair and certificate was already in the secure element\n',
      );
      expect(res.stdout).not.toMatch(/generated|enrolled|Reported/);
      expect(device.pkcs11Tool(['--list-objects'])).toBe(objects);
      expect(statSync(join(device.sotaDir, 'sota.toml')).ino).toBe(before.ino);
      expect(readFileSync(join(device.sotaDir, 'sota.toml'), 'utf8')).toBe(sotaToml);
      expect(showDevice(device.uid)).toBe(show);
    });
  });

  describe('a device that crashes after enrolling, before storing and reporting', () => {
    let device: Device;
    let issuedSerial: string;
    let forwarder: Server | undefined;
    beforeAll(async () => {
      device = await makeDevice('device-b');
      expect(cli(['el2g', 'devices', 'add', PRODUCT, device.uid]).status).toBe(0);
    });
    afterAll(() => forwarder?.close());

    it('dies at the crash point with the key made and no certificate stored', () => {
      const res = device.agent(['auto-register'], { KEYFERRY_AGENT_CRASH_AT: 'after-enroll' });
      expect(res.status).toBe(-1); // killed by SIGKILL: no exit status
      issuedSerial = /enrolled, certificate serial ([0-9a-f]+) /.exec(res.stdout)?.[1] ?? '';
      expect(issuedSerial).not.toBe('');
      const listing = device.pkcs11Tool(['--list-objects']);
      expect(block(listing, 'Private Key Object', 'SE_83000042')).not.toBe('');
      expect(block(listing, 'Certificate Object', 'SE_83000043')).toBe('');
      expect(existsSync(join(device.sotaDir, 'sota.toml'))).toBe(false);
      expect(showDevice(device.uid)).toMatch(
        /fio-device-gateway-ca {5}CERTIFICATE {2}GENERATION_COMPLETED\n/,
      );
    });

    it('the rerun, retrying while the device-link is unreachable, converges on the same certificate', async () => {
      // Reserve a port, free it, point the agent at it: nothing listens until the forwarder starts.
      const probe = createServer();
      await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
      const port = (probe.address() as { port: number }).port;
      await new Promise<void>((r) => probe.close(() => r()));
      const [host, target] = daemon.listen.deviceLink!.split(':') as [string, string];
      let retrying: () => void = () => {};
      const retried = new Promise<void>((r) => (retrying = r));
      const run = runAgentAsync(
        ['auto-register', '--env-file', device.envFile],
        { SOFTHSM2_CONF: device.softhsm.conf, EL2GO_CONNECT_ADDR: `127.0.0.1:${port}` },
        (stderr) => stderr.includes('retrying in 1 s') && retrying(),
      );
      // Only once the agent has failed and said it retries does the device-link become reachable.
      await Promise.race([retried, run]);
      forwarder = createServer((socket) => {
        const upstream = connect(Number(target), host);
        socket.pipe(upstream).pipe(socket);
        upstream.on('error', () => socket.destroy());
        socket.on('error', () => upstream.destroy());
      });
      await new Promise<void>((r) => forwarder!.listen(port, '127.0.0.1', r));
      const res = await run;
      expect(res.stderr).toMatch(
        /^fetching the manifest: cannot reach 127\.0\.0\.1:\d+ .*ECONNREFUSED.*; retrying in 1 s\n/,
      );
      expect(res.status).toBe(0);
      expect(res.stdout).toContain(
        'fio-device-gateway-ca-kp: key SE_83000042 already in the secure element, kept\n',
      );
      expect(res.stdout).toContain(`fio-device-gateway-ca: enrolled, certificate serial ${issuedSerial} `);
      expect(res.stdout).toContain('fio-device-gateway-ca: stored certificate as SE_83000043\n');
      const show = showDevice(device.uid);
      expect(show).toMatch(/fio-device-gateway-ca {5}CERTIFICATE {2}PROVISIONING_COMPLETED\n/);
      const pem = certificateIn(show);
      const serial = execFileSync('openssl', ['x509', '-noout', '-serial'], { input: pem, encoding: 'utf8' });
      expect(serial.trim().toLowerCase()).toBe(
        `serial=${issuedSerial.padStart(serial.trim().length - 7, '0')}`,
      );
      expect(existsSync(join(device.sotaDir, 'sota.toml'))).toBe(true);
    });
  });

  describe('a device that crashes after storing the certificate, before reporting', () => {
    it('reports on the rerun without enrolling again', async () => {
      const device = await makeDevice('device-c');
      expect(cli(['el2g', 'devices', 'add', PRODUCT, device.uid]).status).toBe(0);
      const crashed = device.agent(['auto-register'], { KEYFERRY_AGENT_CRASH_AT: 'after-store' });
      expect(crashed.status).toBe(-1);
      expect(crashed.stdout).toContain('fio-device-gateway-ca: stored certificate as SE_83000043\n');
      expect(showDevice(device.uid)).toMatch(
        /fio-device-gateway-ca {5}CERTIFICATE {2}GENERATION_COMPLETED\n/,
      );
      const res = device.agent(['auto-register']);
      expect(res.stderr).toBe('');
      expect(res.status).toBe(0);
      expect(res.stdout).not.toMatch(/generated|enrolled/);
      expect(res.stdout).toContain(
        'fio-device-gateway-ca-kp: key SE_83000042 already in the secure element, kept\n',
      );
      expect(res.stdout).toMatch(
        /fio-device-gateway-ca: certificate SE_83000043 already stored \(serial [0-9a-f]+\), kept\n/,
      );
      expect(res.stdout).toContain(
        'Reported fio-device-gateway-ca-kp, fio-device-gateway-ca as provisioned\n',
      );
      expect(showDevice(device.uid)).toMatch(
        /fio-device-gateway-ca {5}CERTIFICATE {2}PROVISIONING_COMPLETED\n/,
      );
    });
  });

  describe('a soft secure element (SE_BACKEND=soft) made by keyferry-sim --dir', () => {
    it('provisions and writes a sota.toml with file key and certificate sources', async () => {
      const seDir = join(work, 'device-d-se');
      const device = await makeDevice('device-d', seDir);
      expect(cli(['el2g', 'devices', 'add', PRODUCT, device.uid]).status).toBe(0);
      const res = device.agent(['auto-register']);
      expect(res.stderr).toBe('');
      expect(res.status).toBe(0);
      expect(res.stdout).toContain(`Secure element: soft secure element ${seDir}\n`);
      const sota = readFileSync(join(device.sotaDir, 'sota.toml'), 'utf8');
      expect(sota).toContain('pkey_source = "file"\ncert_source = "file"\n');
      expect(sota).toContain(
        `tls_pkey_path = "${join(seDir, 'SE_83000042.key.pem')}"\ntls_clientcert_path = "${join(seDir, 'SE_83000043.pem')}"\n`,
      );
      expect(sota).not.toContain('[p11]');
      for (const name of ['SE_83000042.key.pem', 'SE_83000043.pem']) {
        expect(statSync(join(seDir, name)).mode & 0o777, name).toBe(0o600);
      }
      const check = spawnSync(
        'openssl',
        ['x509', '-in', join(seDir, 'SE_83000043.pem'), '-noout', '-pubkey'],
        { encoding: 'utf8' },
      );
      const fromKey = spawnSync('openssl', ['pkey', '-in', join(seDir, 'SE_83000042.key.pem'), '-pubout'], {
        encoding: 'utf8',
      });
      expect(check.stdout).toBe(fromKey.stdout);
      expect(showDevice(device.uid)).toMatch(
        /fio-device-gateway-ca {5}CERTIFICATE {2}PROVISIONING_COMPLETED\n/,
      );
    });
  });

  describe('a device deleted from the allow-list and added again', () => {
    /** GET /device at the device gateway with the soft SE's gateway key and certificate. */
    function gatewayCall(seDir: string): Promise<{ status: number; body: any }> {
      const [host, port] = daemon.listen.gateway!.split(':') as [string, string];
      return new Promise((resolve, reject) => {
        const req = httpsRequest(
          {
            host,
            port: Number(port),
            path: '/device',
            servername: `${repoId}.ota-lite.localhost`,
            ca: readFileSync(join(work, 'root.crt')),
            key: readFileSync(join(seDir, 'SE_83000042.key.pem')),
            cert: readFileSync(join(seDir, 'SE_83000043.pem')),
            agent: false,
          },
          (res) => {
            let text = '';
            res.on('data', (d) => (text += d));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
          },
        );
        req.on('error', reject);
        req.end();
      });
    }

    it('provisions again: the agent enrolls its key anew, the gateway takes the new certificate', {
      timeout: 180_000,
    }, async () => {
      const seDir = join(work, 'device-r-se');
      const device = await makeDevice('device-r', seDir);
      const agent = () => runAgentAsync(['auto-register', '--env-file', device.envFile]);
      const cliAsync = (args: string[]) =>
        runBinAsync('keyferry', ['--server', daemon.listen.api, '-t', adminToken, '-f', 'demo', ...args], {
          env: { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg') },
        });
      expect((await cliAsync(['el2g', 'devices', 'add', PRODUCT, device.uid])).status).toBe(0);
      const first = await agent();
      expect(first.stderr).toBe('');
      expect(first.status).toBe(0);
      const firstCert = readFileSync(join(seDir, 'SE_83000043.pem'), 'utf8');
      expect((await gatewayCall(seDir)).status).toBe(200);

      expect((await cliAsync(['el2g', 'devices', 'delete', PRODUCT, device.uid])).status).toBe(0);
      const revoked = await gatewayCall(seDir);
      expect(revoked.body.code).toBe('certificate_revoked');
      expect((await cliAsync(['el2g', 'devices', 'add', PRODUCT, device.uid])).status).toBe(0);

      const again = await agent();
      expect(again.stderr).toBe('');
      expect(again.status).toBe(0);
      expect(again.stdout).toContain(
        'fio-device-gateway-ca-kp: key SE_83000042 already in the secure element, kept\n',
      );
      expect(again.stdout).toMatch(
        /fio-device-gateway-ca: stored certificate \(serial [0-9a-f]+\) is not the service's live one \(none: revoked\); enrolling again\n/,
      );
      expect(again.stdout).toContain(
        'Reported fio-device-gateway-ca-kp, fio-device-gateway-ca as provisioned\n',
      );
      const secondCert = readFileSync(join(seDir, 'SE_83000043.pem'), 'utf8');
      expect(secondCert).not.toBe(firstCert);
      const show = await cliAsync(['el2g', 'devices', 'show', device.uid]);
      expect(show.stdout).toMatch(/fio-device-gateway-ca-kp {2}KEYPAIR {6}PROVISIONING_COMPLETED\n/);
      expect(show.stdout).toMatch(/fio-device-gateway-ca {5}CERTIFICATE {2}PROVISIONING_COMPLETED\n/);
      const accepted = await gatewayCall(seDir);
      expect(accepted.status, JSON.stringify(accepted.body)).toBe(200);

      // and the next run keeps the live certificate
      const third = await agent();
      expect(third.status).toBe(0);
      expect(third.stdout).toMatch(
        /fio-device-gateway-ca: certificate SE_83000043 already stored \(serial [0-9a-f]+\), kept\n/,
      );
    });
  });

  describe('a token whose gateway key id already holds a key imported from outside', () => {
    it('refuses with se_foreign_key, keeps the key, writes no sota.toml', async () => {
      const device = await makeDevice('device-e');
      expect(cli(['el2g', 'devices', 'add', PRODUCT, device.uid]).status).toBe(0);
      const keyFile = join(work, 'device-e', 'imported.pem');
      execFileSync('openssl', [
        'genpkey',
        '-algorithm',
        'EC',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-out',
        keyFile,
      ]);
      device.pkcs11Tool([
        '--write-object',
        keyFile,
        '--type',
        'privkey',
        '--label',
        'SE_83000042',
        '--id',
        '01',
      ]);
      const before = device.pkcs11Tool(['--list-objects']);
      const res = device.agent(['auto-register']);
      expect(res.stderr).toMatch(
        /^ERROR: token 'aktualizr' in .*: object 0x83000042 holds a key keyferry-agent did not generate \(it is or was extractable, .*\); remove it \(pkcs11-tool --delete-object --type privkey --label SE_83000042\) if the key is not needed\n$/,
      );
      expect(res.status).toBe(EXIT_CODES.se_foreign_key);
      // the service was told, before the agent exited: the pair failed before issuance
      expect(res.stdout).toContain('Reported fio-device-gateway-ca-kp, fio-device-gateway-ca as failed\n');
      expect(showDevice(device.uid)).toContain(
        '\tfio-device-gateway-ca-kp  KEYPAIR      GENERATION_FAILED\n' +
          '\tfio-device-gateway-ca     CERTIFICATE  GENERATION_FAILED\n',
      );
      const rtp = await fetch(
        `${daemon.listen.api}/ota/factories/demo/el2g-proxy/rtp/devices/${device.uid}/secure-object-provisionings`,
        { headers: { 'osf-token': adminToken } },
      );
      expect(rtp.status).toBe(200);
      const reasons = (
        (await rtp.json()) as { content: { secureObjectName: string; reason: string }[] }
      ).content
        .filter((o) => o.secureObjectName.startsWith('fio-device-gateway-ca'))
        .map((o) => o.reason);
      expect(reasons).toHaveLength(2);
      for (const reason of reasons)
        expect(reason).toMatch(/object 0x83000042 holds a key keyferry-agent did not generate/);
      expect(device.pkcs11Tool(['--list-objects'])).toBe(before);
      expect(existsSync(join(device.sotaDir, 'sota.toml'))).toBe(false);
      expect(existsSync(device.akliteLog)).toBe(false);
    });
  });

  describe('a pair assigned after the device was provisioned', () => {
    it('provisions a pair assigned later (AWS IoT) on the next run, leaving the gateway pair alone', async () => {
      const res = await fetch(`${daemon.listen.api}/ota/factories/demo/el2g/aws-iot/`, {
        method: 'POST',
        headers: { 'osf-token': adminToken, 'content-type': 'application/json' },
        body: JSON.stringify({ 'registration-code': 'a'.repeat(64) }),
      });
      expect(res.status).toBe(201);
      const gatewayCert = readFileSync(join(work, 'device-a.pem'), 'utf8');
      const device = deviceA;
      const before = device.pkcs11Tool(['--list-objects']);
      const run = device.agent(['auto-register']);
      expect(run.stderr).toBe('');
      expect(run.status).toBe(0);
      expect(run.stdout).toContain(
        'fio-device-gateway-ca-kp: key SE_83000042 already in the secure element, kept\n',
      );
      expect(run.stdout).toContain('aws-iot-ca-kp: generated key SE_83000044 in the secure element\n');
      expect(run.stdout).toContain('aws-iot-ca: stored certificate as SE_83000045\n');
      expect(run.stdout).toContain('Reported aws-iot-ca-kp, aws-iot-ca as provisioned\n');
      const after = device.pkcs11Tool(['--list-objects']);
      for (const [kind, label] of [
        ['Private Key Object', 'SE_83000042'],
        ['Certificate Object', 'SE_83000043'],
      ] as const) {
        expect(block(after, kind, label)).toBe(block(before, kind, label));
      }
      expect(block(after, 'Private Key Object', 'SE_83000044')).toMatch(/ID:\s+04\n[\s\S]*never extractable/);
      expect(block(after, 'Certificate Object', 'SE_83000045')).toMatch(/ID:\s+05\n/);
      const show = showDevice(device.uid);
      expect(show).toMatch(/aws-iot-ca {16}CERTIFICATE {2}PROVISIONING_COMPLETED\n/);
      expect(certificateIn(show)).toBe(gatewayCert);
    });
  });
  describe("a device started as LmP's unit starts it, allow-listed only after the agent started", () => {
    /*
     * The two lines of LmP's lmp-el2go-auto-register.service that start it (meta-lmp): the
     * image keeps that unit and links /usr/bin/lmp-el2go-auto-register to the agent. The unit
     * has no Restart=, so the agent must wait for the allow-list in its one process.
     */
    const LMP_UNIT = [
      '[Service]',
      'EnvironmentFile=-/etc/default/lmp-el2go-auto-register',
      'ExecStart=/usr/bin/lmp-el2go-auto-register',
    ].join('\n');
    const OUR_UNIT = readFileSync(
      join(import.meta.dirname, '../../packages/agent/dist-files/keyferry-agent.service'),
      'utf8',
    );

    it.each([
      ["LmP's own unit (ExecStart=/usr/bin/lmp-el2go-auto-register)", 'lmp', LMP_UNIT],
      ['dist-files/keyferry-agent.service', 'dist', OUR_UNIT],
    ])(
      '%s with an LmP default.env: retries every DAEMON_INTERVAL, then provisions without exiting in between',
      async (_name, tag, unit) => {
        const device = await makeDevice(`device-unit-${tag}`);
        const root = join(work, `device-unit-${tag}`, 'root');
        mkdirSync(join(root, 'etc/default'), { recursive: true });
        // An LmP default.env: LmP's own variables in LmP's spellings, nothing keyferry-only.
        writeFileSync(
          join(root, 'etc/default/lmp-el2go-auto-register'),
          [
            '# meta-subscriber-overrides: recipes-support/lmp-el2go-auto-register/default.env',
            `REPOID="${repoId}"`,
            'DAEMON_INTERVAL=1',
            `PKCS11_PIN=${PIN}`,
            'PKCS11_SOPIN=12345678',
            'GENERIC_KEYPAIRS=0X83000044',
            'PACMAN_TYPE=ostree',
            `SOTA_DIR=${device.sotaDir}`,
            '',
          ].join('\n'),
        );
        // What a drop-in (Environment=) adds on this test machine: where the device-link is (LmP
        // built EL2GO_HOSTNAME into the image) and what stands in for the device's hardware and
        // files: SoftHSM2 for the SE's module, root.crt outside /usr/share, no systemctl.
        const dropIn = {
          EL2GO_HOSTNAME: subdomain,
          EL2GO_CONNECT_ADDR: daemon.listen.deviceLink!,
          DEVICE_LINK_CA: join(dataDir, 'service-ca.pem'),
          PKCS11_MODULE: device.softhsm.module,
          SOFTHSM2_CONF: device.softhsm.conf,
          ROOT_CRT: join(work, 'root.crt'),
          AKLITE_START_CMD: `echo started >> ${device.akliteLog}`,
        };
        const refusedLine = new RegExp(
          `^device ${device.uid} is not on the factory's allow-list \\(.*\\); ` +
            `add it with: keyferry el2g devices add ${PRODUCT} ${device.uid}; retrying in 1 s$`,
          'gm',
        );
        let waiting: () => void = () => {};
        const refusedTwice = new Promise<void>((r) => (waiting = r));
        const started = startLikeSystemd({
          unit,
          root,
          dropIn,
          onOutput: (_out, err) => (err.match(refusedLine)?.length ?? 0) >= 2 && waiting(),
        });
        // The agent has been refused twice and is still running: only now is the device added.
        await Promise.race([refusedTwice, started.done]);
        const added = cli(['el2g', 'devices', 'add', PRODUCT, device.uid]);
        expect(added.stderr).toBe('');
        expect(added.status).toBe(0);
        const res = await started.done;
        expect(res.stderr.match(refusedLine)?.length ?? 0).toBeGreaterThanOrEqual(2);
        expect(res.stderr).not.toContain('ERROR');
        expect(res.status).toBe(0);
        expect(res.stdout).toContain(
          `Manifest: 2 key pair(s) assigned to fio-${PRODUCT}: fio-device-gateway-ca-kp/fio-device-gateway-ca, aws-iot-ca-kp/aws-iot-ca\n`,
        );
        expect(res.stdout).toMatch(/\nProvisioning complete\nStarting aktualizr-lite: echo started >> .*\n$/);
        expect(readFileSync(device.akliteLog, 'utf8')).toBe('started\n');
        const listing = device.pkcs11Tool(['--list-objects']);
        for (const [kind, label, id] of [
          ['Private Key Object', 'SE_83000042', '01'],
          ['Certificate Object', 'SE_83000043', '03'],
          ['Private Key Object', 'SE_83000044', '04'],
          ['Certificate Object', 'SE_83000045', '05'],
        ] as const) {
          expect(block(listing, kind, label), label).toMatch(new RegExp(`ID:\\s+${id}\n`));
        }
        const sota = readFileSync(join(device.sotaDir, 'sota.toml'), 'utf8');
        expect(sota).toContain('\n[pacman]\ntype = "ostree"\n');
        expect(sota).toContain(`\n[tls]\nserver = "https://${repoId}.ota-lite.localhost:8443"\n`);
        const show = showDevice(device.uid);
        expect(show).toMatch(/fio-device-gateway-ca {5}CERTIFICATE {2}PROVISIONING_COMPLETED\n/);
        expect(show).toMatch(/aws-iot-ca {16}CERTIFICATE {2}PROVISIONING_COMPLETED\n/);
      },
      180_000,
    );
  });
});

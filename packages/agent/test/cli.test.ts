import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { join } from 'node:path';
import { createServer, type Server } from 'node:tls';
import { toPem } from '@keyferry/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS } from '../../../test/support/processes.ts';
import { initTestToken } from '../../../test/support/softhsm.ts';
import { EXIT_CODES } from '../src/agent-error.ts';
import { runAgent, runAgentAsync, spawnAgent } from './support/agent-bin.ts';
import {
  createSecureElementFixtures,
  FIXTURE_UID,
  type SecureElementFixtures,
} from './support/secure-elements.ts';
import { serverPki } from './support/server-pki.ts';

let fx: SecureElementFixtures;
let envFile: string;
let sotaDir: string;
let seEnv: NodeJS.ProcessEnv;

beforeAll(async () => {
  fx = await createSecureElementFixtures();
  initTestToken(fx.softhsm.conf, { label: 'blank' });
  sotaDir = join(fx.work, 'sota');
  mkdirSync(sotaDir);
  writeFileSync(join(fx.work, 'root.crt'), toPem(fx.vendorCa, 'CERTIFICATE'));
  envFile = join(fx.work, 'lmp-el2go-auto-register');
  writeFileSync(
    envFile,
    [
      'REPOID=abcdef1234',
      'EL2GO_HOSTNAME=abcdefghijklmnop.device-link.localhost',
      `PKCS11_MODULE=${fx.softhsm.module}`,
      `SOTA_DIR=${sotaDir}`,
      `ROOT_CRT=${join(fx.work, 'root.crt')}`,
      'DAEMON_INTERVAL=1',
      'AKLITE_START_CMD=true',
      '',
    ].join('\n'),
  );
  seEnv = { SOFTHSM2_CONF: fx.softhsm.conf };
});
afterAll(() => fx?.cleanup());

const agent = (args: string[], env: NodeJS.ProcessEnv = {}) => runAgent(args, { ...seEnv, ...env });

describe('keyferry-agent uid', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('prints the UID as ssscli did, from the PKCS#11 token', () => {
    const res = agent(['uid', '--env-file', envFile]);
    expect(res.stderr).toBe('');
    expect(res.stdout).toBe(`Unique ID: ${FIXTURE_UID}\n`);
    expect(res.status).toBe(0);
  });

  it('prints the 42-digit decimal form with --decimal, from the soft backend', () => {
    const res = agent(['uid', '--decimal', '--env-file', envFile], { SE_BACKEND: 'soft', SE_DIR: fx.seDir });
    expect(res.stdout).toBe('348555492004256518532939906410866457667712\n');
    expect(res.status).toBe(0);
  });
});

describe('refusals: one ERROR line, a distinct exit code, no sota.toml', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  afterAll(() => expect(readdirSync(sotaDir)).toEqual([]));

  it.each([
    [
      'a module path that does not load',
      { PKCS11_MODULE: '/nonexistent/libse05x.so' },
      'se_module',
      /^ERROR: PKCS#11 module \/nonexistent\/libse05x\.so could not be loaded: .*; set PKCS11_MODULE/,
    ],
    [
      'a token label that is not there',
      { PKCS11_TOKEN_LABEL: 'nosuch' },
      'se_token',
      /^ERROR: no token labelled 'nosuch' in PKCS#11 module .*set PKCS11_TOKEN_LABEL/,
    ],
    [
      'a wrong PIN',
      { PKCS11_PIN: '11111111' },
      'se_pin',
      /^ERROR: wrong PIN for token 'aktualizr' .*check PKCS11_PIN/,
    ],
    [
      'a token without the vendor identity',
      { PKCS11_TOKEN_LABEL: 'blank' },
      'se_no_identity',
      /^ERROR: token 'blank' in .* has no vendor UID \(data object 'SE_7fff0206', 18 bytes\)/,
    ],
    [
      'a soft SE_DIR that is not there',
      { SE_BACKEND: 'soft', SE_DIR: '/nonexistent/se' },
      'se_token',
      /^ERROR: SE_DIR \/nonexistent\/se is not a directory; make a soft secure element with: keyferry-sim se05x create --dir/,
    ],
  ] as const)('uid and auto-register refuse %s', (_name, env, kind, message) => {
    for (const command of ['uid', 'auto-register']) {
      const res = agent([command, '--env-file', envFile], env);
      expect(res.stderr, command).toMatch(message);
      expect(res.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(res.status, command).toBe(EXIT_CODES[kind]);
    }
  });

  it("uid (and auto-register) hint at the agent's settings, never at --hsm-module / --hsm-pin it does not have", () => {
    for (const command of ['uid', 'auto-register']) {
      const module = agent([command, '--env-file', envFile], { PKCS11_MODULE: '/nonexistent/libse05x.so' });
      expect(module.stderr, command).toMatch(
        /^ERROR: PKCS#11 module \/nonexistent\/libse05x\.so could not be loaded: .*; set PKCS11_MODULE to the path of the secure element's PKCS#11 module \(\.so\)\n$/,
      );
      const pin = agent([command, '--env-file', envFile], { PKCS11_PIN: '11111111' });
      expect(pin.stderr, command).toMatch(
        /^ERROR: wrong PIN for token 'aktualizr' in PKCS#11 module \S+; check PKCS11_PIN \(repeated failures can lock the token\)\n$/,
      );
      expect(`${module.stderr}${pin.stderr}`).not.toContain('--hsm');
    }
  });

  it('a missing env file, naming it', () => {
    const missing = join(fx.work, 'absent.env');
    const res = agent(['auto-register', '--env-file', missing]);
    expect(res.stderr).toBe(
      `ERROR: env file ${missing} does not exist; create it (it must set REPOID) or name another with --env-file\n`,
    );
    expect(res.status).toBe(EXIT_CODES.env_file_missing);
  });

  it('a missing REPOID', () => {
    const noRepo = join(fx.work, 'no-repoid');
    writeFileSync(noRepo, readFileSync(envFile, 'utf8').replace(/^REPOID=.*\n/m, ''));
    // empty in the environment too: that counts as unset, as in the file
    const res = agent(['auto-register', '--env-file', noRepo], { REPOID: '' });
    expect(res.stderr).toMatch(/^ERROR: REPOID is not set; add REPOID=/);
    expect(res.status).toBe(EXIT_CODES.setting_invalid);
  });

  it.each([
    [
      'ROOT_CRT',
      'an unreadable root.crt',
      /^ERROR: ROOT_CRT .*absent\.crt cannot be read \(ENOENT\); install the file or fix ROOT_CRT\n$/,
    ],
    [
      'DEVICE_LINK_CA',
      'an unreadable device-link CA',
      /^ERROR: DEVICE_LINK_CA .*absent\.crt cannot be read \(ENOENT\)/,
    ],
  ])('%s: %s', (setting, _name, message) => {
    const res = agent(['auto-register', '--once', '--env-file', envFile], {
      [setting]: join(fx.work, 'absent.crt'),
    });
    expect(res.stderr).toMatch(message);
    expect(res.status).toBe(EXIT_CODES.file_unreadable);
  });

  it('a root.crt with no certificate in it', () => {
    const empty = join(fx.work, 'empty.crt');
    writeFileSync(empty, 'not a certificate\n');
    const res = agent(['auto-register', '--env-file', envFile], { ROOT_CRT: empty });
    expect(res.stderr).toBe(
      `ERROR: ROOT_CRT ${empty} holds no PEM certificate; put the CA certificate there\n`,
    );
    expect(res.status).toBe(EXIT_CODES.file_unreadable);
  });

  it('a device-link server that is unreachable, with --once: transient', () => {
    const res = agent(['auto-register', '--once', '--env-file', envFile], {
      EL2GO_CONNECT_ADDR: '127.0.0.1:1',
    });
    expect(res.stdout).toContain(
      'Connecting to 127.0.0.1:1 (abcdefghijklmnop.device-link.localhost) as device 0x',
    );
    expect(res.stderr).toMatch(/^ERROR: fetching the manifest: cannot reach 127\.0\.0\.1:1 .*ECONNREFUSED/);
    expect(res.status).toBe(EXIT_CODES.transient);
  });

  it('a log whose reader went away does not end a provisioning run as a success', async () => {
    const child = spawnAgent(['auto-register', '--once', '--env-file', envFile], {
      ...seEnv,
      EL2GO_CONNECT_ADDR: '127.0.0.1:1',
    });
    // `| head -0`: the reading end closes before the agent writes its first line
    child.stdout!.destroy();
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    expect(stderr).toMatch(/^ERROR: fetching the manifest: cannot reach 127\.0\.0\.1:1 /);
    expect(code).toBe(EXIT_CODES.transient);
  });

  it('a device-link address that answers with a redirect: refused, naming where it points', async () => {
    const pki = await serverPki(['abcdefghijklmnop.device-link.localhost']);
    const ca = join(fx.work, 'redirecting-ca.pem');
    writeFileSync(ca, pki.caPem);
    const server = createHttpsServer({ key: pki.keyPem, cert: pki.certPem }, (_req, res) => {
      res.writeHead(301, { location: 'https://elsewhere.example/device-link/v1/manifest' }).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as { port: number }).port;
      const res = await runAgentAsync(['auto-register', '--once', '--env-file', envFile], {
        ...seEnv,
        EL2GO_CONNECT_ADDR: `127.0.0.1:${port}`,
        DEVICE_LINK_CA: ca,
      });
      expect(res.stderr).toMatch(
        /^ERROR: fetching the manifest: .* answered a redirect \(HTTP 301, to https:\/\/elsewhere\.example\/device-link\/v1\/manifest\); the device-link never redirects: EL2GO_HOSTNAME \(or EL2GO_CONNECT_ADDR\) must reach keyferryd's device-link itself\n$/,
      );
      expect(res.status).toBe(EXIT_CODES.refused);
    } finally {
      server.close();
    }
  });

  describe('a device-link server whose certificate does not verify', () => {
    let server: Server;
    let port: number;
    let trusted: string;
    beforeAll(async () => {
      const pki = await serverPki(['abcdefghijklmnop.device-link.localhost']);
      const other = await serverPki(['abcdefghijklmnop.device-link.localhost']);
      trusted = join(fx.work, 'device-link-ca.pem');
      writeFileSync(trusted, other.caPem);
      server = createServer({ key: pki.keyPem, cert: pki.certPem }, (s) => s.end());
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      port = (server.address() as { port: number }).port;
    });
    afterAll(() => server?.close());

    it('is refused before anything is sent, and not retried', async () => {
      const res = await runAgentAsync(['auto-register', '--env-file', envFile], {
        ...seEnv,
        EL2GO_CONNECT_ADDR: `127.0.0.1:${port}`,
        DEVICE_LINK_CA: trusted,
      });
      expect(res.stderr).toMatch(
        new RegExp(
          `^ERROR: the device-link server 127\\.0\\.0\\.1:${port} \\(abcdefghijklmnop\\.device-link\\.localhost\\) is not trusted: .*; ` +
            'check EL2GO_HOSTNAME and that DEVICE_LINK_CA names the CA that signed its certificate\n$',
        ),
      );
      expect(res.status).toBe(EXIT_CODES.server_untrusted);
      expect(existsSync(join(sotaDir, 'sota.toml'))).toBe(false);
    });
  });
});

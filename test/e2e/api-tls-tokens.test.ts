import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import SqliteDatabase from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BINS,
  type DaemonProcess,
  PROCESS_TEST_TIMEOUT_MS,
  runBinAsync,
  startKeyferryd,
} from '../support/processes.ts';

const run = promisify(execFile);

/** Exit code, stdout and stderr of an independent client (curl, openssl), never throwing. */
async function client(cmd: string, args: string[], input?: string) {
  const child = run(cmd, args, { encoding: 'utf8', timeout: 60_000 });
  if (input !== undefined) child.child.stdin?.end(input);
  try {
    const { stdout, stderr } = await child;
    return { status: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return {
      status: typeof e.code === 'number' ? e.code : -1,
      stdout: e.stdout ?? '',
      stderr: e.stderr ?? '',
    };
  }
}

/** A private CA, a P-256 server certificate for 127.0.0.1 and a client certificate, made by openssl. */
async function makeTlsMaterial(dir: string) {
  const f = (name: string) => join(dir, name);
  const ossl = async (args: string[]) => {
    const res = await client('openssl', args);
    if (res.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${res.stderr}`);
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await ossl([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=ops CA',
  ]);
  const leaf = async (name: string, cn: string, ext: string) => {
    writeFileSync(f(`${name}.ext`), ext);
    await ossl(['req', ...ec, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=${cn}`]);
    const sign = ['-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2'];
    await ossl([
      'x509',
      '-req',
      '-in',
      f(`${name}.csr`),
      ...sign,
      '-extfile',
      f(`${name}.ext`),
      '-out',
      f(`${name}.pem`),
    ]);
  };
  await leaf(
    'server',
    'keyferryd',
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n',
  );
  await leaf('client', 'operator', 'extendedKeyUsage=clientAuth\n');
  await leaf(
    'elsewhere',
    'keyferryd',
    'subjectAltName=DNS:keyferry.example.test,DNS:api.example.test\nextendedKeyUsage=serverAuth\n',
  );
  return {
    ca: f('ca.pem'),
    cert: f('server.pem'),
    key: f('server.key'),
    clientCert: f('client.pem'),
    clientKey: f('client.key'),
    /** A server certificate of the same CA for other names than 127.0.0.1. */
    elsewhereCert: f('elsewhere.pem'),
    elsewhereKey: f('elsewhere.key'),
  };
}

/** A server in this process on a free loopback port: its URL without the scheme, and how to close it. */
async function listening(server: Server) {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    hostPort: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((r) => server.close(r)),
  };
}

/** A configured deployment: its own factory and token from `keyferryd admin`, no demo factory. */
async function deployment(work: string, api: Record<string, unknown>) {
  const dataDir = join(work, 'data');
  const config = join(work, 'keyferryd.json');
  writeFileSync(config, JSON.stringify({ dataDir, api: { listen: '127.0.0.1:0', ...api } }));
  const env = { KEYFERRY_DATA_DIR: dataDir };
  // as docs/deployment.md says: the first start makes the database and the master key, then
  // the admin commands work on them (while keyferryd runs)
  const daemon = await startKeyferryd(dataDir, { args: ['-c', config] });
  const made = await runBinAsync('keyferryd', ['-c', config, 'admin', 'factory', 'create', 'acme'], { env });
  expect(made.stderr).toContain('Next: keyferryd admin token create --factory acme');
  expect(made.stdout).toMatch(/^Created factory acme \(repo id [a-z0-9]{10}\)\n$/);
  const tok = await runBinAsync(
    'keyferryd',
    ['-c', config, 'admin', 'token', 'create', '--factory', 'acme', '--scope', 'write', '--expires', '30d'],
    { env },
  );
  expect(tok.status).toBe(0);
  const token = tok.stdout.trim();
  expect(token).toMatch(/^kf_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
  expect(tok.stderr).toMatch(/scopes read write, expires 20\d\d-/);
  const tokenFile = join(work, 'acme.token');
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  return { daemon, token, tokenFile, dataDir, config };
}

describe('management API over TLS, tokens from keyferryd admin and keyferry tokens', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  let work: string;
  let tls: Awaited<ReturnType<typeof makeTlsMaterial>>;
  let d: Awaited<ReturnType<typeof deployment>>;
  let daemon: DaemonProcess;
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    runBinAsync('keyferry', ['--server', daemon.listen.api, ...args], {
      env: { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg'), KEYFERRY_TOKEN: '', ...env },
    });

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-e2e-apitls-'));
    tls = await makeTlsMaterial(work);
    d = await deployment(work, { tls: { cert: tls.cert, key: tls.key } });
    daemon = d.daemon;
  });
  afterAll(async () => {
    await daemon?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('serves HTTPS that curl verifies with the CA, and no demo factory with a config file', async () => {
    expect(daemon.listen.api).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(daemon.stdout()).toContain(`Management API: ${daemon.listen.api}`);
    expect(daemon.stdout()).not.toContain('Demo factory');
    expect(existsSync(join(d.dataDir, 'demo.token'))).toBe(false);
    const ok = await client('curl', [
      '-sS',
      '--cacert',
      tls.ca,
      '-H',
      `OSF-TOKEN: ${d.token}`,
      `${daemon.listen.api}/ota/factories/`,
    ]);
    expect(ok.status).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual([
      { name: 'acme', 'repo-id': expect.stringMatching(/^[a-z0-9]{10}$/) },
    ]);
    // without the CA curl cannot verify the server (exit 60)
    expect((await client('curl', ['-sS', `${daemon.listen.api}/healthz`])).status).toBe(60);
  });

  it('offers TLS 1.2 only with ECDHE and AEAD ciphers (openssl s_client)', async () => {
    const host = daemon.listen.api.replace('https://', '');
    const hello = (args: string[]) =>
      client('openssl', ['s_client', '-connect', host, '-CAfile', tls.ca, ...args], '');
    const gcm = await hello(['-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-GCM-SHA256']);
    expect(gcm.stdout).toMatch(/Cipher is ECDHE-ECDSA-AES128-GCM-SHA256/);
    const cbc = await hello(['-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-SHA']);
    expect(cbc.status).not.toBe(0);
    expect(cbc.stdout).not.toMatch(/Cipher is ECDHE-ECDSA-AES128-SHA\b/);
    const old = await hello(['-tls1_1']);
    expect(old.status).not.toBe(0);
    const v13 = await hello(['-tls1_3']);
    expect(v13.stdout).toMatch(/TLSv1\.3/);
  });

  it('keyferry reads the token from --token-file and the CA from --server-ca, and says which is missing', async () => {
    const ok = await cli(['--token-file', d.tokenFile, '--server-ca', tls.ca, 'factories']);
    expect(ok.stderr).toBe('');
    expect(ok.stdout).toMatch(/^NAME {2}REPO ID\n---- {2}-------\nacme {2}[a-z0-9]{10}\n$/);
    const noCa = await cli(['--token-file', d.tokenFile, 'factories']);
    expect(noCa.status).not.toBe(0);
    expect(noCa.stderr).toMatch(/^ERROR: cannot verify keyferryd's TLS certificate .* --server-ca FILE/);
    const env = await cli(['factories'], { KEYFERRY_TOKEN_FILE: d.tokenFile, KEYFERRY_SERVER_CA: tls.ca });
    expect(env.stdout).toContain('acme');
    const missing = await cli(['--token-file', join(work, 'nope'), 'factories']);
    expect(missing.stderr).toBe(`ERROR: cannot read the token file ${join(work, 'nope')}: ENOENT\n`);
  });

  it('says what is wrong with the URL or the TLS server, not "cannot reach … is it running?"', async () => {
    const keyferry = (server: string) =>
      runBinAsync(
        'keyferry',
        ['--server', server, '--token-file', d.tokenFile, '--server-ca', tls.ca, 'factories'],
        {
          env: { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg'), KEYFERRY_TOKEN: '' },
        },
      );
    const noScheme = await keyferry('127.0.0.1:8080');
    expect(noScheme).toEqual({
      status: 2,
      stdout: '',
      stderr:
        'ERROR: the server URL "127.0.0.1:8080" needs http:// or https:// in front (e.g. --server http://127.0.0.1:8080): check --server\n',
    });
    const otherScheme = await keyferry('ftp://127.0.0.1:8080');
    expect(otherScheme.stderr).toBe(
      'ERROR: the server URL "ftp://127.0.0.1:8080" must start with http:// or https://: check --server\n',
    );
    const elsewhere = await listening(
      createHttpsServer(
        { cert: readFileSync(tls.elsewhereCert), key: readFileSync(tls.elsewhereKey) },
        (_q, r) => r.end('[]'),
      ),
    );
    const plain = await listening(createHttpServer((_q, r) => r.end('[]')));
    try {
      const names = await keyferry(`https://${elsewhere.hostPort}`);
      expect(names).toEqual({
        status: 1,
        stdout: '',
        stderr:
          `ERROR: keyferryd's TLS certificate at https://${elsewhere.hostPort} is for other names (keyferry.example.test, api.example.test), ` +
          'not 127.0.0.1 (ERR_TLS_CERT_ALTNAME_INVALID): use a --server host the certificate names\n',
      });
      const notTls = await keyferry(`https://${plain.hostPort}`);
      expect(notTls).toEqual({
        status: 1,
        stdout: '',
        stderr: `ERROR: https://${plain.hostPort} does not answer TLS (ERR_SSL_WRONG_VERSION_NUMBER), so it is likely a plain HTTP server: use http:// or check the port\n`,
      });
    } finally {
      await elsewhere.close();
      await plain.close();
    }
  });

  it('keyferry tokens create / list / revoke: a revoked token is refused at once', async () => {
    const base = ['--token-file', d.tokenFile, '--server-ca', tls.ca, '-f', 'acme'];
    const created = await cli([
      ...base,
      ...'tokens create --scope read --expires 7d --description dashboard'.split(' '),
    ]);
    expect(created.status).toBe(0);
    const token = created.stdout.trim();
    expect(token).toMatch(/^kf_[0-9a-f]{16}_/);
    expect(created.stderr).toMatch(/^Token [0-9a-f]{16}, scopes read, expires 20\d\d-.*Shown once/);
    const id = token.split('_')[1]!;
    const listed = await cli([...base, 'tokens', 'list']);
    expect(listed.stdout.split('\n')[0]).toMatch(/^ID +SCOPES +CREATED +STATE +DESCRIPTION$/);
    expect(listed.stdout).toMatch(new RegExp(`${id} +read +\\S+ +expires \\S+ +dashboard`));
    expect(listed.stdout).not.toContain(token.slice('kf_0123456789abcdef_'.length));
    const asNew = ['--server-ca', tls.ca, '-t', token];
    expect((await cli([...asNew, 'factories'])).status).toBe(0);
    const readOnly = await cli([
      ...asNew,
      ...'-f acme tokens create --scope read --description x'.split(' '),
    ]);
    expect(readOnly.stderr).toContain('lacks the "write" scope');
    const revoked = await cli([...base, 'tokens', 'revoke', id]);
    expect(revoked.stdout).toMatch(new RegExp(`^Revoked token ${id} at 20`));
    const refused = await cli([...asNew, 'factories']);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toContain(`the API token ${id} was revoked at`);
    const bad = await cli([
      ...base,
      ...'tokens create --scope read --expires soon --description x'.split(' '),
    ]);
    expect(bad.stderr).toBe(
      'ERROR: --expires "soon" is not a duration: use a whole number above 0 and a unit: s, m, h, d, w or y (e.g. 30d, 12h, 1y), at most 100 years\n',
    );
    // the token secrets never reach keyferryd's log
    expect(daemon.stdout() + daemon.stderr()).not.toContain(token.slice('kf_0123456789abcdef_'.length));
    expect(daemon.stdout() + daemon.stderr()).not.toContain(d.token.slice('kf_0123456789abcdef_'.length));
  });

  it('keyferryd admin refuses an unknown factory, a bad duration or scope and a taken name, and changes nothing', async () => {
    const admin = (args: string[]) =>
      runBinAsync('keyferryd', ['-c', d.config, 'admin', ...args], { env: { KEYFERRY_DATA_DIR: d.dataDir } });
    const tokensBefore = (await admin(['token', 'list', '--factory', 'acme'])).stdout;
    const cases: [string[], string][] = [
      [
        ['token', 'create', '--factory', 'nope', '--scope', 'read'],
        'ERROR: keyferryd admin token create: factory nope not found: create it with keyferryd admin factory create nope\n',
      ],
      [
        ['token', 'create', '--factory', 'acme', '--scope', 'read', '--expires', '3x'],
        'ERROR: keyferryd admin token create: --expires "3x" is not a duration: use a whole number above 0 and a unit: s, m, h, d, w or y (e.g. 30d, 12h, 1y), at most 100 years\n',
      ],
      [
        ['token', 'create', '--factory', 'acme', '--scope', 'read', '--expires', '0d'],
        'ERROR: keyferryd admin token create: --expires "0d" is not a duration: use a whole number above 0 and a unit: s, m, h, d, w or y (e.g. 30d, 12h, 1y), at most 100 years\n',
      ],
      [
        ['token', 'create', '--factory', 'acme', '--scope', 'read', '--expires', '200y'],
        'ERROR: keyferryd admin token create: --expires "200y" is not a duration: use a whole number above 0 and a unit: s, m, h, d, w or y (e.g. 30d, 12h, 1y), at most 100 years\n',
      ],
      [['factory', 'create', 'acme'], 'ERROR: keyferryd admin factory create: factory acme already exists\n'],
      [['token', 'revoke', '0123456789abcdef', '--factory', 'acme'], 'not found in this factory'],
    ];
    for (const [args, message] of cases) {
      const res = await admin(args);
      expect(res.status, args.join(' ')).not.toBe(0);
      expect(res.stdout, args.join(' ')).toBe('');
      if (message.endsWith('\n')) expect(res.stderr).toBe(message);
      else expect(res.stderr).toContain(message);
    }
    const scope = await admin(['token', 'create', '--factory', 'acme', '--scope', 'admin']);
    expect(scope.status).not.toBe(0);
    expect(scope.stderr).toContain("argument 'admin' is invalid. Allowed choices are read, write");
    expect((await admin(['token', 'list', '--factory', 'acme'])).stdout).toBe(tokensBefore);
    const factories = await cli(['--token-file', d.tokenFile, '--server-ca', tls.ca, 'factories']);
    expect(factories.stdout.match(/^acme /gm)).toHaveLength(1);
  });

  it('refuses plain HTTP on a non-loopback address unless api.insecure, and leaves nothing behind', async () => {
    const other = join(work, 'plain');
    const config = join(work, 'plain.json');
    writeFileSync(config, JSON.stringify({ dataDir: other, api: { listen: '0.0.0.0:0' } }));
    const res = await runBinAsync('keyferryd', ['-c', config], {
      env: { KEYFERRY_DATA_DIR: other, KEYFERRY_API_LISTEN: '' },
    });
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(
      /^ERROR: keyferryd cannot start: the management API would listen on 0\.0\.0\.0 without TLS.*api\.tls.*api\.insecure: true/,
    );
    expect(existsSync(other)).toBe(false);
  });
});

describe('management API with mutual TLS (api.tls.clientCa)', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let work: string;
  let tls: Awaited<ReturnType<typeof makeTlsMaterial>>;
  let d: Awaited<ReturnType<typeof deployment>>;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-e2e-apimtls-'));
    tls = await makeTlsMaterial(work);
    d = await deployment(work, { tls: { cert: tls.cert, key: tls.key, clientCa: tls.ca } });
  });
  afterAll(async () => {
    await d?.daemon.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('refuses a client without a certificate at the TLS layer and serves one with it', async () => {
    const url = `${d.daemon.listen.api}/ota/factories/`;
    const without = await client('curl', ['-sS', '--cacert', tls.ca, '-H', `OSF-TOKEN: ${d.token}`, url]);
    expect(without.status).not.toBe(0);
    expect(without.stdout).toBe('');
    const withCert = await client('curl', [
      '-sS',
      '--cacert',
      tls.ca,
      '--cert',
      tls.clientCert,
      '--key',
      tls.clientKey,
      '-H',
      `OSF-TOKEN: ${d.token}`,
      url,
    ]);
    expect(withCert.status).toBe(0);
    expect(JSON.parse(withCert.stdout)[0].name).toBe('acme');
    const cli = await runBinAsync(
      'keyferry',
      [
        '--server',
        d.daemon.listen.api,
        '--server-ca',
        tls.ca,
        '--client-cert',
        tls.clientCert,
        '--client-key',
        tls.clientKey,
        '--token-file',
        d.tokenFile,
        'factories',
      ],
      { env: { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg') } },
    );
    expect(cli.stderr).toBe('');
    expect(cli.stdout).toContain('acme');
    expect(readFileSync(d.tokenFile, 'utf8').trim()).toBe(d.token);
  });

  it("keyferry says a client certificate may be needed, or that the key is not the certificate's (was: cannot reach … is it running?)", async () => {
    const keyferry = (args: string[]) =>
      runBinAsync(
        'keyferry',
        [
          '--server',
          d.daemon.listen.api,
          '--server-ca',
          tls.ca,
          '--token-file',
          d.tokenFile,
          ...args,
          'factories',
        ],
        { env: { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg') } },
      );
    const without = await keyferry([]);
    expect(without.stdout).toBe('');
    expect(without.status).toBe(1);
    expect(without.stderr).toMatch(
      new RegExp(
        `^ERROR: keyferryd at ${d.daemon.listen.api.replace(/\./g, '\\.')} closed the TLS connection \\((UND_ERR_SOCKET|ERR_SSL_\\w*ALERT\\w*)\\): ` +
          'it may require a client certificate \\(mutual TLS\\); pass --client-cert FILE and --client-key FILE \\(or KEYFERRY_CLIENT_CERT and KEYFERRY_CLIENT_KEY\\)\n$',
      ),
    );
    const mismatch = await keyferry(['--client-cert', tls.clientCert, '--client-key', tls.key]);
    expect(mismatch).toEqual({
      status: 1,
      stdout: '',
      stderr: `ERROR: the client key ${tls.key} does not match the certificate ${tls.clientCert} (ERR_OSSL_X509_KEY_VALUES_MISMATCH): pass the --client-key that belongs to --client-cert\n`,
    });
  });
});

/**
 * keyferryd.service's layout: the master key outside the data dir, handed to the service with
 * KEYFERRY_MASTER_KEY_FILE, which a shell running `keyferryd admin` does not set.
 */
describe('keyferryd admin works on the database and master key keyferryd made, never makes its own', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  let work: string;
  let dataDir: string;
  let config: string;
  let masterKey: string;
  /** The environment keyferryd.service gives keyferryd. */
  const service = () => ({ KEYFERRY_MASTER_KEY_FILE: masterKey });
  const admin = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    runBinAsync('keyferryd', ['-c', config, 'admin', ...args], {
      env: { KEYFERRY_DATA_DIR: '', KEYFERRY_MASTER_KEY_FILE: '', ...env },
    });
  /** `keyferryd admin …` with stdout on /dev/full (ENOSPC) or a pipe whose reader has gone (EPIPE). */
  async function adminWithFailingStdout(
    args: string[],
    stdout: 'full' | 'closed pipe',
    env: NodeJS.ProcessEnv,
  ) {
    const fd = stdout === 'full' ? openSync('/dev/full', 'w') : 'pipe';
    const child = spawn(process.execPath, [BINS.keyferryd, '-c', config, 'admin', ...args], {
      env: { ...process.env, KEYFERRY_DEBUG: '', ...env },
      stdio: ['ignore', fd, 'pipe'],
    });
    // spawn returns once the program is exec'd: its stdout is then the only end left of the pipe
    if (typeof fd === 'number') closeSync(fd);
    else child.stdout!.destroy();
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const status = await new Promise<number | null>((r) => child.once('close', r));
    return { status, stderr };
  }
  const factoryNames = (db: string) => {
    const sqlite = new SqliteDatabase(db, { readonly: true, fileMustExist: true });
    try {
      return sqlite
        .prepare('select name from factories')
        .all()
        .map((r) => (r as { name: string }).name);
    } finally {
      sqlite.close();
    }
  };

  /** A data dir of its own, made by keyferryd's first start, with factory acme made by admin. */
  async function deployed(name: string): Promise<string> {
    const dir = join(work, name);
    await (await startKeyferryd(dir, { args: ['-c', config], env: service() })).stop();
    const made = await admin(['factory', 'create', 'acme'], { ...service(), KEYFERRY_DATA_DIR: dir });
    expect(made.status).toBe(0);
    return dir;
  }

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-e2e-admin-'));
    dataDir = join(work, 'var-lib-keyferry');
    config = join(work, 'keyferryd.json');
    writeFileSync(config, JSON.stringify({ dataDir, api: { listen: '127.0.0.1:0' } }));
    mkdirSync(join(work, 'etc'), { mode: 0o700 });
    masterKey = join(work, 'etc', 'master.key');
    writeFileSync(masterKey, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  });
  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('refuses a data dir or database keyferryd has not made, and writes nothing', async () => {
    const typo = join(work, 'var-lib-keyfery');
    const out = join(work, 'out.db');
    const missingDir =
      `data dir ${typo} does not exist (keyferryd makes it on its first start, admin commands never do): ` +
      'name the data dir keyferryd runs on with dataDir in the config file (-c) or KEYFERRY_DATA_DIR\n';
    expect(await admin(['backup', out], { KEYFERRY_DATA_DIR: typo })).toEqual({
      status: 2,
      stdout: '',
      stderr: `ERROR: keyferryd admin backup: ${missingDir}`,
    });
    expect(await admin(['token', 'list', '--factory', 'acme'], { KEYFERRY_DATA_DIR: typo })).toEqual({
      status: 2,
      stdout: '',
      stderr: `ERROR: keyferryd admin token list: ${missingDir}`,
    });
    expect(existsSync(typo)).toBe(false);
    expect(existsSync(out)).toBe(false);
    // the state directory systemd makes before keyferryd's first start: empty
    mkdirSync(dataDir, { mode: 0o700 });
    expect(await admin(['factory', 'create', 'acme'], service())).toEqual({
      status: 2,
      stdout: '',
      stderr:
        `ERROR: keyferryd admin factory create: there is no database ${join(dataDir, 'keyferry.db')} ` +
        '(keyferryd makes it on its first start, admin commands never do): start keyferryd once, or name the ' +
        'database keyferryd runs on with dataDir in the config file (-c) or KEYFERRY_DATA_DIR\n',
    });
    expect(readdirSync(dataDir)).toEqual([]);
  });

  it('never makes a master key: refused without KEYFERRY_MASTER_KEY_FILE, works with it, and the service starts again', async () => {
    const first = await startKeyferryd(dataDir, { args: ['-c', config], env: service() });
    await first.stop();
    const files = readdirSync(dataDir).sort();
    expect(files).toContain('keyferry.db');
    expect(files).not.toContain('master.key');
    expect(await admin(['factory', 'create', 'acme'])).toEqual({
      status: 2,
      stdout: '',
      stderr:
        `ERROR: keyferryd admin factory create: there is no master key at ${join(dataDir, 'master.key')}: ` +
        'keyferryd makes it on its first start, admin commands never do; start keyferryd first, and give admin ' +
        'commands the master key it uses (keyCustody.masterKeyFile or KEYFERRY_MASTER_KEY_FILE): with ' +
        'keyferryd.service, run them with KEYFERRY_MASTER_KEY_FILE=/etc/keyferry/master.key (the file its ' +
        'LoadCredential=master.key: names)\n',
    });
    expect(readdirSync(dataDir).sort()).toEqual(files);
    expect(factoryNames(join(dataDir, 'keyferry.db'))).toEqual([]);

    const made = await admin(['factory', 'create', 'acme'], service());
    expect(made.stdout).toMatch(/^Created factory acme /);
    expect(made.status).toBe(0);
    expect(readdirSync(dataDir)).not.toContain('master.key');
    // the gateway TLS key of acme is wrapped with the service's key: it starts and serves acme
    const again = await startKeyferryd(dataDir, { args: ['-c', config], env: service() });
    expect(await again.stop()).toBe(0);
    expect(again.stderr()).not.toContain('master key');
  });

  it('backs up the database without the master key (custody is not opened)', async () => {
    const dir = await deployed('backup-node');
    const file = join(work, 'backup.db');
    expect(await admin(['backup', file], { KEYFERRY_DATA_DIR: dir })).toEqual({
      status: 0,
      stdout: `Backed up the database to ${file}\n`,
      stderr: 'The master key is not in it: back it up apart, once (docs/deployment.md).\n',
    });
    expect(factoryNames(file)).toEqual(['acme']);
    expect(readdirSync(dir)).not.toContain('master.key');
  });

  it('makes, lists and revokes tokens without the master key (a token is its SHA-256, no custody holds it)', async () => {
    const dir = await deployed('token-no-key-node');
    const env = { KEYFERRY_DATA_DIR: dir };
    const made = await admin(['token', 'create', '--factory', 'acme', '--scope', 'read'], env);
    expect(made.status).toBe(0);
    expect(made.stdout).toMatch(/^kf_\S+\n$/);
    const id = /^Token ([0-9a-f]+) for factory acme/.exec(made.stderr)?.[1];
    expect(id).toBeDefined();
    const listed = await admin(['token', 'list', '--factory', 'acme'], env);
    expect(listed.status).toBe(0);
    expect(listed.stdout).toMatch(new RegExp(`^${id}\\s+read\\s`, 'm'));
    const revoked = await admin(['token', 'revoke', id!, '--factory', 'acme'], env);
    expect(revoked).toMatchObject({
      status: 0,
      stdout: expect.stringMatching(new RegExp(`^Revoked token ${id} at `)),
    });
    expect(readdirSync(dir)).not.toContain('master.key');
  });

  it('revokes a token whose secret cannot be written to stdout, and says so', async () => {
    const env = { ...service(), KEYFERRY_DATA_DIR: await deployed('token-node') };
    for (const stdout of ['full', 'closed pipe'] as const) {
      const res = await adminWithFailingStdout(
        ['token', 'create', '--factory', 'acme', '--scope', 'write'],
        stdout,
        env,
      );
      const code = stdout === 'full' ? 'ENOSPC' : 'EPIPE';
      const line = new RegExp(
        `^ERROR: keyferryd admin token create: the secret of token ([0-9a-f]+) could not be written to stdout \\(${code}\\), so the token is revoked: run the command again with stdout to a file or pipe that takes it\\n$`,
      );
      expect({ stdout, ...res }).toEqual({ stdout, status: 2, stderr: expect.stringMatching(line) });
      const id = line.exec(res.stderr)![1]!;
      const listed = await admin(['token', 'list', '--factory', 'acme'], env);
      expect(listed.stdout).toMatch(new RegExp(`^${id}\\s+read,write\\s+\\S+\\s+revoked `, 'm'));
    }
  });

  it('names the setting when the master key path is a directory, for admin commands and the start', async () => {
    const node = await deployed('key-dir-node');
    const dir = mkdtempSync(join(work, 'key-dir-'));
    const why =
      `master key file ${dir} is a directory: keyCustody.masterKeyFile or KEYFERRY_MASTER_KEY_FILE must name ` +
      'the file holding the master key (64 hex digits); point it at that file\n';
    // factory create opens key custody (the factory's gateway TLS key); the token commands do not
    expect(
      await admin(['factory', 'create', 'beta'], {
        KEYFERRY_DATA_DIR: node,
        KEYFERRY_MASTER_KEY_FILE: dir,
      }),
    ).toEqual({
      status: 2,
      stdout: '',
      stderr: `ERROR: keyferryd admin factory create: ${why}`,
    });
    expect(factoryNames(join(node, 'keyferry.db'))).toEqual(['acme']);
    const start = await runBinAsync('keyferryd', ['-c', config], {
      env: { KEYFERRY_DATA_DIR: node, KEYFERRY_MASTER_KEY_FILE: dir, KEYFERRY_LOG_LEVEL: 'warn' },
    });
    expect({ status: start.status, stderr: start.stderr }).toEqual({
      status: 2,
      stderr: `ERROR: keyferryd cannot start: ${why}`,
    });
    expect(readdirSync(dir)).toEqual([]);
  });
});

import { createPrivateKey, type KeyObject } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent } from '../../packages/agent/test/support/agent-bin.ts';
import { SoftCustody } from '../../packages/server/src/keys/soft-custody.ts';
import type { CustodyKeysTable } from '../../packages/server/src/storage/tables.ts';
import { writeAgentEnvFile } from '../support/device-link.ts';
import {
  type DaemonProcess,
  PROCESS_TEST_TIMEOUT_MS,
  type RunResult,
  runBin,
  runBinAsync,
  runCommand,
  startKeyferryd,
} from '../support/processes.ts';
import { createSofthsmEnv, type SofthsmEnv } from '../support/softhsm.ts';

const PRODUCT = '935389312472';
/** The device's PKCS#11 user PIN (the LmP default, in the agent's env file). */
const SE_PIN = '87654321';
const TOKEN_PREFIX = 'kf_0123456789abcdef_';

/**
 * Secrets never reach a log: one whole provisioning flow with every program as talkative as it
 * gets (keyferryd at trace, KEYFERRY_DEBUG=1 for the CLI and the agent, refusals included),
 * then every line any of them wrote is searched for the token secrets, the master key, the
 * PIN and the bytes of every private key the flow made (PEM lines, DER and the raw scalar in
 * base64, base64url and hex).
 */
describe('no secret in any log of a full provisioning run', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let work: string;
  let dataDir: string;
  let daemon: DaemonProcess;
  let softhsm: SofthsmEnv;
  /** Everything the programs printed, by what printed it. */
  const logs: { what: string; text: string }[] = [];
  const secrets: { what: string; text: string }[] = [];
  const keep = (what: string, res: RunResult, { stdoutIsSecret = false } = {}) => {
    logs.push({ what: `${what} (stderr)`, text: res.stderr });
    if (!stdoutIsSecret) logs.push({ what: `${what} (stdout)`, text: res.stdout });
    return res;
  };
  const ok = (what: string, res: RunResult) => {
    keep(what, res);
    expect(res.status, `${what}: ${res.stderr}`).toBe(0);
    return res;
  };
  const tokenFile = () => join(work, 'token');
  const cliEnv = () => ({
    HOME: work,
    XDG_CONFIG_HOME: join(work, 'xdg'),
    KEYFERRY_DEBUG: '1',
    KEYFERRY_SERVER: daemon.listen.api,
    KEYFERRY_TOKEN_FILE: tokenFile(),
    KEYFERRY_FACTORY: 'demo',
  });
  const cli = (args: string[]) => runBin('keyferry', args, { env: cliEnv() });

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-e2e-secrets-'));
    dataDir = join(work, 'data');
    daemon = await startKeyferryd(dataDir, { env: { KEYFERRY_LOG_LEVEL: 'trace' } });
    writeFileSync(tokenFile(), readFileSync(join(dataDir, 'demo.token')), { mode: 0o600 });
    softhsm = createSofthsmEnv({ setProcessEnv: false });

    const pki = join(work, 'pki');
    ok('keys ca create', cli(['keys', 'ca', 'create', pki]));
    ok('config-device-gateway', cli(['el2g', 'config-device-gateway', '--pki-dir', pki]));
    const root = ok('keys ca show', cli(['keys', 'ca', 'show', '--just-root']));
    writeFileSync(join(work, 'root.crt'), root.stdout);
    const subdomain = /^# Subdomain: (\S+)$/m.exec(ok('status', cli(['el2g', 'status'])).stdout)?.[1];
    const repoId = /^demo {2}(\S+)$/m.exec(ok('factories', cli(['factories'])).stdout)?.[1];

    // a second token: created, used, revoked, then refused
    const created = keep(
      'tokens create',
      cli(['tokens', 'create', '--scope', 'read', '--description', 'ci']),
      {
        stdoutIsSecret: true,
      },
    );
    expect(created.status, created.stderr).toBe(0);
    const readToken = created.stdout.trim();
    secrets.push({ what: 'created token secret', text: readToken.slice(TOKEN_PREFIX.length) });
    // the search sees a secret where one is meant to be: the one output that is the token
    expect(created.stdout).toContain(secrets[0]!.text);
    const readTokenFile = join(work, 'read.token');
    writeFileSync(readTokenFile, `${readToken}\n`, { mode: 0o600 });
    const asRead = (args: string[]) =>
      runBin('keyferry', args, { env: { ...cliEnv(), KEYFERRY_TOKEN_FILE: readTokenFile } });
    ok('factories as read token', asRead(['factories']));
    ok('tokens list', cli(['tokens', 'list']));
    const id = readToken.slice('kf_'.length, TOKEN_PREFIX.length - 1);
    ok('tokens revoke', cli(['tokens', 'revoke', id]));
    const refused = keep('revoked token refused', asRead(['factories']));
    expect(refused.status).not.toBe(0);
    const forged = keep(
      'forged token refused',
      runBin('keyferry', ['factories'], {
        env: { ...cliEnv(), KEYFERRY_TOKEN_FILE: '', KEYFERRY_TOKEN: `${readToken.slice(0, -4)}AAAA` },
      }),
    );
    expect(forged.status).not.toBe(0);

    // a device: refused before it is allow-listed, then provisioned
    const sim = ok(
      'sim se05x create',
      runBin('sim', ['se05x', 'create', '--product', PRODUCT, '--pkcs11'], {
        env: { SOFTHSM2_CONF: softhsm.conf, KEYFERRY_DATA_DIR: dataDir },
      }),
    );
    const uid = sim.stdout.trim();
    const sotaDir = join(work, 'sota');
    mkdirSync(sotaDir);
    const envFile = join(work, 'agent.env');
    writeAgentEnvFile(envFile, {
      repoId: repoId!,
      subdomain: subdomain!,
      deviceLinkAddress: daemon.listen.deviceLink!,
      dataDir,
      pkcs11Module: softhsm.module,
      sotaDir,
      rootCrt: join(work, 'root.crt'),
      extra: [`PKCS11_PIN=${SE_PIN}`],
    });
    const agent = (args: string[]) =>
      runAgent([...args, '--env-file', envFile], { SOFTHSM2_CONF: softhsm.conf, KEYFERRY_DEBUG: '1' });
    expect(keep('agent before allow-list', agent(['auto-register', '--once'])).status).not.toBe(0);
    ok('devices add', cli(['el2g', 'devices', 'add', PRODUCT, uid]));
    ok('agent auto-register', agent(['auto-register', '--once']));
    ok('agent again', agent(['auto-register', '--once']));
    const shown = ok('devices show', cli(['el2g', 'devices', 'show', uid]));
    expect(shown.stdout).toMatch(/fio-device-gateway-ca\s+CERTIFICATE\s+PROVISIONING_COMPLETED/);
    // refusals at the TLS layer are logged at debug, with their error objects
    keep(
      'openssl to the gateway with an unknown host name',
      await runCommand(
        'openssl',
        ['s_client', '-connect', daemon.listen.gateway!, '-servername', 'nope.ota-lite.localhost'],
        {
          timeoutMs: 30_000,
        },
      ),
    );

    // a backup while keyferryd runs
    ok(
      'admin backup',
      await runBinAsync('keyferryd', ['admin', 'backup', join(work, 'backup.db')], {
        env: { KEYFERRY_DATA_DIR: dataDir, KEYFERRY_LOG_LEVEL: 'trace', KEYFERRY_DEBUG: '1' },
      }),
    );
    await daemon.stop();
    logs.push(
      { what: 'keyferryd stdout', text: daemon.stdout() },
      { what: 'keyferryd stderr', text: daemon.stderr() },
    );

    secrets.push(
      {
        what: 'demo token secret',
        text: readFileSync(join(dataDir, 'demo.token'), 'utf8').trim().slice(TOKEN_PREFIX.length),
      },
      { what: 'device PIN', text: SE_PIN },
    );
    const masterHex = readFileSync(join(dataDir, 'master.key'), 'utf8').trim();
    secrets.push(...byteForms('master key', Buffer.from(masterHex, 'hex')));
    for (const file of [
      join(pki, 'factory_ca.key'),
      join(pki, 'local-ca.key'),
      join(dataDir, 'service-ca.key'),
      join(dataDir, 'device-link-tls.key'),
    ]) {
      secrets.push(...keyForms(file, readFileSync(file, 'utf8')));
    }
    // every key in custody: the EdgeLock 2GO intermediate, the online device CA, the gateway TLS key
    const sqlite = new SqliteDatabase(join(dataDir, 'keyferry.db'), { readonly: true });
    const rows = sqlite
      .prepare("select * from custody_keys where backend = 'soft'")
      .all() as CustodyKeysTable[];
    sqlite.close();
    expect(rows.length).toBeGreaterThanOrEqual(3);
    const soft = SoftCustody.open(join(dataDir, 'master.key'), { create: false });
    for (const row of rows) {
      const pem = String((await soft.tlsServerKey(row)).export({ format: 'pem', type: 'pkcs8' }));
      secrets.push(...keyForms(`custody key ${row.purpose}`, pem));
    }
    // the simulated vendor CA's key, and the device identity keys keyferry-sim wrote
    for (const name of readdirSync(join(dataDir, 'sim')).filter((f) => f.endsWith('.key'))) {
      secrets.push(...keyForms(`sim/${name}`, readFileSync(join(dataDir, 'sim', name), 'utf8')));
    }
  });
  afterAll(async () => {
    await daemon?.stop();
    softhsm?.cleanup();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('searched something: keyferryd logged below info, refusals included; the agent its steps', () => {
    const daemonLog = logs.find((l) => l.what === 'keyferryd stdout')!.text;
    expect(daemonLog).toMatch(/"level":20,.*"msg":"gateway SNI refused"/);
    expect(daemonLog).toContain('"msg":"device-link refused"');
    expect(daemonLog).toContain('"code":"unauthenticated"');
    expect(logs.find((l) => l.what === 'agent auto-register (stdout)')!.text).toContain(
      'Provisioning complete',
    );
    expect(secrets.length).toBeGreaterThan(20);
  });

  it('no token secret, master key, PIN or private key byte in any of them', () => {
    const found: string[] = [];
    for (const secret of secrets) {
      for (const log of logs) if (log.text.includes(secret.text)) found.push(`${secret.what} in ${log.what}`);
    }
    expect(found).toEqual([]);
  });
});

/** A secret's bytes as a log could carry them: hex, base64 and base64url. */
function byteForms(what: string, bytes: Buffer): { what: string; text: string }[] {
  return [
    { what: `${what} (hex)`, text: bytes.toString('hex') },
    { what: `${what} (base64)`, text: bytes.toString('base64').replace(/=+$/, '') },
    { what: `${what} (base64url)`, text: bytes.toString('base64url') },
  ];
}

/** A private key file's PEM lines, its DER and its private scalar in every form. */
function keyForms(what: string, pem: string): { what: string; text: string }[] {
  const key: KeyObject = createPrivateKey(pem);
  const d = Buffer.from(key.export({ format: 'jwk' }).d!, 'base64url');
  const lines = pem
    .split('\n')
    .filter((l) => l.length >= 40 && !l.startsWith('-----'))
    .map((text, i) => ({ what: `${what} PEM line ${i + 1}`, text }));
  return [
    ...lines,
    ...byteForms(`${what} scalar`, d),
    ...byteForms(`${what} PKCS#8`, key.export({ format: 'der', type: 'pkcs8' })),
  ];
}

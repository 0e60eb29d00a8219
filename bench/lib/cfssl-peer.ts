/**
 * The peer CA for issuance alone: cfssl (Debian `golang-cfssl`, listed in
 * scripts/system-packages.sh) `serve` on loopback with GOMAXPROCS=1, pinned to the same core
 * keyferryd had, signing CSRs over its /api/v1/cfssl/sign endpoint through the same
 * keep-alive client (keep-alive-client.ts) and concurrency as keyferry's simpleenroll.
 *
 * Two ways: plain HTTP, signing only (the issue's peer); and `stored`, doing what keyferry's
 * enrollment does besides signing: mutual TLS (a client certificate its own CA signed, cfssl's
 * `-mutual-tls-ca`) and every certificate written to SQLite (cfssl's certdb, `-db-config`),
 * in WAL with synchronous NORMAL like keyferryd's. The TLS material is made with openssl.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { join } from 'node:path';
import { selfSignedCa, softSigner, toPem } from '@keyferry/core';
import Sqlite from 'better-sqlite3';
import { freePort } from '../../test/support/postgres.ts';
import { Failures, runPool, send } from './keep-alive-client.ts';
import { pin, processCpuMs } from './process-stats.ts';

const READY_ATTEMPTS = 200;
const WARM_UP_CSRS = 50;

/** cfssl's path, or why the cfssl column is skipped. */
export function findCfssl(): { bin: string } | { skipped: string } {
  const bin = spawnSync('sh', ['-c', 'command -v cfssl'], { encoding: 'utf8' }).stdout.trim();
  return bin
    ? { bin }
    : {
        skipped:
          'cfssl is missing; install it with: apt-get install -y golang-cfssl (or bash scripts/system-packages.sh as root)',
      };
}

export function cfsslVersion(bin: string): string {
  return /Version: (\S+)/.exec(execFileSync(bin, ['version'], { encoding: 'utf8' }))?.[1] ?? '?';
}

export interface IssueRun {
  issued: number;
  failures: Failures;
  perSecond: number;
  serverMsPerCert: number;
}

/** Signs every CSR (PEM) through `cfssl serve`, `concurrency` in flight. */
export async function cfsslIssue(options: {
  bin: string;
  dir: string;
  csrPems: readonly string[];
  concurrency: number;
  core: number | undefined;
  /** mutual TLS and every certificate stored in SQLite, as keyferry does (above) */
  stored?: boolean;
}): Promise<IssueRun> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ca = await selfSignedCa({
    subject: { CN: 'bench cfssl CA' },
    signer: softSigner(privateKey),
    years: 1,
  });
  writeFileSync(join(options.dir, 'ca.pem'), toPem(ca, 'CERTIFICATE'));
  writeFileSync(join(options.dir, 'ca-key.pem'), privateKey.export({ format: 'pem', type: 'sec1' }), {
    mode: 0o600,
  });
  const port = await freePort();
  const args = [
    'serve',
    '-address',
    '127.0.0.1',
    '-port',
    String(port),
    '-ca',
    'ca.pem',
    '-ca-key',
    'ca-key.pem',
  ];
  const db = options.stored ? storedPeer(options.dir) : undefined;
  if (db) args.push(...db.args);
  const child = spawn(options.bin, [...args, '-loglevel', '5'], {
    cwd: options.dir,
    env: { ...process.env, GOMAXPROCS: '1' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const agent = db
    ? new HttpsAgent({
        host: '127.0.0.1',
        port,
        keepAlive: true,
        maxSockets: options.concurrency,
        ...db.client,
      })
    : new Agent({ host: '127.0.0.1', port, keepAlive: true, maxSockets: options.concurrency });
  const sign = async (pem: string) => {
    const text = await send({
      agent,
      tls: db !== undefined,
      method: 'POST',
      path: '/api/v1/cfssl/sign',
      body: JSON.stringify({ certificate_request: pem }),
    });
    const json = JSON.parse(text) as {
      success: boolean;
      result?: { certificate?: string };
      errors?: unknown;
    };
    if (!json.success || !json.result?.certificate)
      throw new Error(`cfssl sign failed: ${JSON.stringify(json.errors)}`);
  };
  try {
    for (let i = 0; ; i++) {
      if (child.exitCode !== null) throw new Error(`cfssl serve exited ${child.exitCode}: ${stderr}`);
      try {
        await sign(options.csrPems[0]!);
        break;
      } catch (error) {
        if (i > READY_ATTEMPTS) throw error;
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    pin(child.pid!, options.core);
    const warm = new Failures();
    await runPool(
      Math.min(WARM_UP_CSRS, options.csrPems.length),
      options.concurrency,
      (i) => sign(options.csrPems[i]!),
      warm,
    );
    const failures = new Failures();
    const cpu0 = processCpuMs(child.pid!);
    const start = performance.now();
    await runPool(options.csrPems.length, options.concurrency, (i) => sign(options.csrPems[i]!), failures);
    const seconds = (performance.now() - start) / 1000;
    const issued = options.csrPems.length - failures.count;
    const rows = db?.count();
    if (rows !== undefined && rows < issued)
      throw new Error(`cfssl answered ${issued} certificates but stored ${rows} in its certdb`);
    return {
      issued,
      failures,
      perSecond: issued / seconds,
      serverMsPerCert: (processCpuMs(child.pid!) - cpu0) / issued,
    };
  } finally {
    agent.destroy();
    child.kill('SIGTERM');
  }
}

/**
 * TLS material and an empty certdb for the `stored` peer: cfssl's arguments for them, what the
 * client presents, and how many certificates the certdb holds.
 */
function storedPeer(dir: string): {
  args: string[];
  client: { ca: Buffer; cert: Buffer; key: Buffer };
  count(): number;
} {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const p256 = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(
    'req',
    '-x509',
    ...p256,
    '-keyout',
    'tls-key.pem',
    '-out',
    'tls.pem',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-days',
    '2',
  );
  openssl(
    'req',
    '-x509',
    ...p256,
    '-keyout',
    'client-ca-key.pem',
    '-out',
    'client-ca.pem',
    '-subj',
    '/CN=bench client CA',
    '-days',
    '2',
  );
  openssl('req', ...p256, '-keyout', 'client-key.pem', '-out', 'client.csr', '-subj', '/CN=bench client');
  openssl(
    'x509',
    '-req',
    '-in',
    'client.csr',
    '-CA',
    'client-ca.pem',
    '-CAkey',
    'client-ca-key.pem',
    '-CAcreateserial',
    '-days',
    '2',
    '-out',
    'client.pem',
  );
  // cfssl 1.2.0's certdb tables (certdb/sqlite); WAL is kept in the file, synchronous is per connection
  const path = join(dir, 'certdb.sqlite');
  const certdb = new Sqlite(path);
  certdb.pragma('journal_mode = WAL');
  certdb.exec(`create table certificates (serial_number blob not null, authority_key_identifier blob not null,
    ca_label blob, status blob not null, reason int, expiry timestamp, revoked_at timestamp, pem blob not null,
    primary key (serial_number, authority_key_identifier));
    create table ocsp_responses (serial_number blob not null, authority_key_identifier blob not null,
    body blob not null, expiry timestamp, primary key (serial_number, authority_key_identifier));`);
  writeFileSync(
    join(dir, 'certdb.json'),
    JSON.stringify({ driver: 'sqlite3', data_source: `file:${path}?_sync=1&_busy_timeout=5000` }),
  );
  const read = (file: string) => readFileSync(join(dir, file));
  return {
    args: [
      '-tls-cert',
      'tls.pem',
      '-tls-key',
      'tls-key.pem',
      '-mutual-tls-ca',
      'client-ca.pem',
      '-db-config',
      'certdb.json',
    ],
    client: { ca: read('tls.pem'), cert: read('client.pem'), key: read('client-key.pem') },
    count: () => (certdb.prepare('select count(*) as n from certificates').get() as { n: number }).n,
  };
}

import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A throwaway PostgreSQL 15 cluster for tests: initdb + pg_ctl from Debian's postgresql-15
 * in a temp dir on a free loopback port. initdb refuses to run as root, so as root the
 * binaries run as the `postgres` system user, which owns the temp dir.
 */
export interface PostgresCluster {
  readonly url: string;
  readonly port: number;
  /** The postmaster's PID (its backends are its child processes). */
  readonly pid: number;
  /** The server's log file. */
  readonly log: string;
  /** Starts the cluster again after it stopped (a crash, a full disk's shutdown). */
  start(): void;
  stop(): void;
}

const PG_BIN = process.env.KEYFERRY_PG_BIN ?? '/usr/lib/postgresql/15/bin';

export interface PostgresOptions {
  /**
   * The directory the cluster's temp dir (data dir, socket, log) is made in; the system's temp
   * dir by default. A test that fills the database's disk passes a small tmpfs (small-disk.ts):
   * as root, the `postgres` user must be able to enter it (mode 0711 on it and its parents).
   * The server's log then goes to a temp dir of its own on the system's disk, so that what
   * PostgreSQL says about a full disk is not lost to it.
   */
  parent?: string;
}

export async function startPostgres(options: PostgresOptions = {}): Promise<PostgresCluster> {
  const dir = mkdtempSync(join(options.parent ?? tmpdir(), 'keyferry-pg-'));
  const dataDir = join(dir, 'data');
  const port = await freePort();
  const asRoot = process.getuid?.() === 0;
  const owner = asRoot ? postgresUser() : undefined;
  const logDir = options.parent ? mkdtempSync(join(tmpdir(), 'keyferry-pg-log-')) : dir;
  for (const d of new Set([dir, logDir])) {
    if (owner) chownSync(d, owner.uid, owner.gid);
    chmodSync(d, 0o700);
  }
  const run = (cmd: string, args: string[]) => {
    const full = join(PG_BIN, cmd);
    const res = owner
      ? spawnSync('runuser', ['-u', 'postgres', '--', full, ...args], { encoding: 'utf8', cwd: dir })
      : spawnSync(full, args, { encoding: 'utf8', cwd: dir });
    if (res.status !== 0) {
      throw new Error(
        `${cmd} failed (exit ${res.status}): ${res.stderr || res.stdout || res.error?.message}`,
      );
    }
  };
  const pwFile = join(dir, 'pw');
  writeFileSync(pwFile, 'keyferry\n');
  if (owner) chownSync(pwFile, owner.uid, owner.gid);
  run('initdb', [
    '-D',
    dataDir,
    '-U',
    'keyferry',
    '--pwfile',
    pwFile,
    '-A',
    'scram-sha-256',
    '-E',
    'UTF8',
    '--no-sync',
  ]);
  const log = join(logDir, 'log');
  const start = () =>
    run('pg_ctl', [
      '-D',
      dataDir,
      '-l',
      log,
      '-w',
      '-t',
      '60',
      '-o',
      `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200`,
      'start',
    ]);
  start();
  const url = `postgres://keyferry:keyferry@127.0.0.1:${port}/postgres`;
  const pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  return {
    url,
    port,
    pid,
    log,
    start,
    stop() {
      try {
        run('pg_ctl', ['-D', dataDir, '-m', 'immediate', '-w', 'stop']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
        rmSync(logDir, { recursive: true, force: true });
      }
    },
  };
}

/** A fresh database in the cluster, so test files never see each other's rows. */
export async function createDatabase(clusterUrl: string, name: string): Promise<string> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: clusterUrl });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE "${name.replace(/[^a-z0-9_]/g, '_')}"`);
  } finally {
    await client.end();
  }
  const url = new URL(clusterUrl);
  url.pathname = '/' + name.replace(/[^a-z0-9_]/g, '_');
  return url.toString();
}

/**
 * Every row of every table of `client`'s database (schema public), digested per table: equal
 * digests, nothing committed between.
 */
export async function tableDigest(client: {
  query<R>(text: string): Promise<{ rows: R[] }>;
}): Promise<Record<string, string>> {
  const { rows } = await client.query<{ table_name: string }>(
    "select table_name from information_schema.tables where table_schema = 'public' order by table_name",
  );
  const out: Record<string, string> = {};
  for (const { table_name } of rows) {
    const r = await client.query<{ d: string }>(
      `select count(*) || ':' || md5(coalesce(string_agg(t::text, '|' order by t::text), '')) as d from "${table_name}" t`,
    );
    out[table_name] = r.rows[0]!.d;
  }
  return out;
}

function postgresUser(): { uid: number; gid: number } {
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

/**
 * A loopback port nothing listens on, for a process the caller starts next. It is drawn from
 * below the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), which the kernel
 * hands out both to listeners on port 0 (every other test's keyferryd) and as the source port
 * of outgoing connections: a port from that range can be taken by another test between this
 * call and the caller's bind, which with HAProxy in front (several-nodes.test.ts) can put a
 * stranger behind a port the test trusts.
 */
export async function freePort(): Promise<number> {
  const below = ephemeralLow();
  // a machine whose ephemeral range starts that low leaves nothing to draw from: the kernel's pick
  if (below === undefined) return kernelPort();
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = LOW_PORT + Math.floor(Math.random() * (below - LOW_PORT));
    if (await canListen(port)) return port;
  }
  throw new Error(`no free loopback port between ${LOW_PORT} and ${below - 1} after 50 tries`);
}

/** The lowest port freePort draws from: above the well-known and most registered services. */
const LOW_PORT = 10_000;

function ephemeralLow(): number | undefined {
  const range = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8');
  const low = Number(range.trim().split(/\s+/)[0]);
  return Number.isInteger(low) && low > LOW_PORT + 1000 ? low : undefined;
}

function kernelPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/**
 * The peer CA for issuance alone: cfssl (Debian `golang-cfssl`, listed in
 * scripts/system-packages.sh) `serve` on loopback with GOMAXPROCS=1, pinned to the same core
 * keyferryd had, signing CSRs over its /api/v1/cfssl/sign endpoint through the same
 * keep-alive client (keep-alive-client.ts) and concurrency as keyferry's simpleenroll.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { selfSignedCa, softSigner, toPem } from '@keyferry/core';
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

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
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
  const child = spawn(options.bin, [...args, '-loglevel', '5'], {
    cwd: options.dir,
    env: { ...process.env, GOMAXPROCS: '1' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const agent = new Agent({ host: '127.0.0.1', port, keepAlive: true, maxSockets: options.concurrency });
  const sign = async (pem: string) => {
    const text = await send({
      agent,
      tls: false,
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

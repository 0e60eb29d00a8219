/**
 * The peer CA for issuance alone: cfssl (Debian `golang-cfssl`) `serve` on loopback, signing
 * the same CSRs over its /api/v1/cfssl/sign endpoint with bounded concurrency. cfssl runs
 * with GOMAXPROCS=1, so both CAs get one core for the signing side.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { selfSignedCa, softSigner, toPem } from '@keyferry/core';

export const CFSSL_APT = 'apt-get install -y golang-cfssl';

/** cfssl's path, installing golang-cfssl when missing and root; undefined (with a reason) otherwise. */
export function ensureCfssl(): { bin: string } | { skipped: string } {
  const which = () => spawnSync('sh', ['-c', 'command -v cfssl'], { encoding: 'utf8' }).stdout.trim();
  if (which()) return { bin: which() };
  if (process.getuid?.() !== 0) return { skipped: `cfssl is missing; install it with: ${CFSSL_APT}` };
  console.error(`cfssl is missing; running: ${CFSSL_APT}`);
  const res = spawnSync('sh', ['-c', `apt-get update -qq && ${CFSSL_APT}`], { stdio: 'inherit' });
  if (res.status !== 0 || !which()) return { skipped: `${CFSSL_APT} failed; the cfssl column is skipped` };
  return { bin: which() };
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

/** Signs every CSR (PEM) through `cfssl serve`; returns certificates per second. */
export async function cfsslSignRate(
  bin: string,
  dir: string,
  csrPems: string[],
  concurrency: number,
): Promise<number> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ca = await selfSignedCa({
    subject: { CN: 'bench cfssl CA' },
    signer: softSigner(privateKey),
    years: 1,
  });
  writeFileSync(join(dir, 'ca.pem'), toPem(ca, 'CERTIFICATE'));
  writeFileSync(join(dir, 'ca-key.pem'), privateKey.export({ format: 'pem', type: 'sec1' }), { mode: 0o600 });
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
    '-loglevel',
    '5',
  ];
  const child = spawn(bin, args, {
    cwd: dir,
    env: { ...process.env, GOMAXPROCS: '1' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const url = `http://127.0.0.1:${port}/api/v1/cfssl/sign`;
  const sign = async (pem: string) => {
    const res = await fetch(url, { method: 'POST', body: JSON.stringify({ certificate_request: pem }) });
    const json = (await res.json()) as {
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
        await sign(csrPems[0]!);
        break;
      } catch (error) {
        if (i > 200) throw error;
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    for (const pem of csrPems.slice(0, 50)) await sign(pem); // warm-up
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < csrPems.length; i = next++) await sign(csrPems[i]!);
    };
    const start = performance.now();
    await Promise.all(Array.from({ length: concurrency }, worker));
    return csrPems.length / ((performance.now() - start) / 1000);
  } finally {
    child.kill('SIGTERM');
  }
}

export function cfsslVersion(bin: string): string {
  return /Version: (\S+)/.exec(execFileSync(bin, ['version'], { encoding: 'utf8' }))?.[1] ?? '?';
}

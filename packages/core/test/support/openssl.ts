import { execFileSync, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Signer, softSigner } from '../../src/index.ts';

/** Runs the openssl CLI, the independent implementation these tests check against. */
export function openssl(args: readonly string[], input?: Uint8Array | string): string {
  return execFileSync('openssl', args, {
    input,
    stdio: ['pipe', 'pipe', 'pipe'],
    maxBuffer: 64 * 1024 * 1024,
  }).toString('utf8');
}

/**
 * Runs openssl and returns stdout and stderr together whatever the exit status: some verdicts
 * (`openssl crl -verify` prints "verify failure" and exits 0 in 3.0) are only in the text.
 */
export function opensslOutput(args: readonly string[], input?: Uint8Array | string): string {
  const result = spawnSync('openssl', args, { encoding: 'utf8', ...(input === undefined ? {} : { input }) });
  return result.stdout + result.stderr;
}

/** Runs openssl expecting failure; returns its combined output. */
export function opensslFails(args: readonly string[]): string {
  try {
    execFileSync('openssl', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (error) {
    const e = error as { stdout: Buffer; stderr: Buffer };
    return e.stdout.toString() + e.stderr.toString();
  }
  throw new Error(`openssl ${args.join(' ')} succeeded but was expected to fail`);
}

/** A temporary directory with a write helper; `cleanup` removes it. */
export function scratchDir(): {
  path: (name: string) => string;
  write: (name: string, data: Uint8Array | string) => string;
  cleanup: () => void;
} {
  const dir = mkdtempSync(join(tmpdir(), 'keyferry-x509-'));
  return {
    path: (name) => join(dir, name),
    write: (name, data) => {
      const file = join(dir, name);
      writeFileSync(file, data);
      return file;
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** A soft P-256 signer with a fresh key. */
export function newSigner(): Signer {
  return softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
}

/** DER bytes of a PEM text, decoded without the code under test. */
export function pemToDer(pem: string): Uint8Array {
  return Uint8Array.from(Buffer.from(pem.replace(/-----[A-Z0-9 ]+-----|\s/g, ''), 'base64'));
}

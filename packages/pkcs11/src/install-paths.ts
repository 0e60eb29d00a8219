import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { KeyferryError } from '@keyferry/core';

/** Debian multiarch triplets, the running architecture's first. */
function triplets(): string[] {
  const byArch: Record<string, string> = {
    x64: 'x86_64-linux-gnu',
    arm64: 'aarch64-linux-gnu',
    arm: 'arm-linux-gnueabihf',
    riscv64: 'riscv64-linux-gnu',
  };
  const own = byArch[process.arch];
  return [...new Set([...(own ? [own] : []), ...Object.values(byArch)])];
}

function firstExisting(candidates: string[]): string | undefined {
  return candidates.find((path) => existsSync(path));
}

/**
 * Path of the OpenSSL PKCS#11 engine (libp11's pkcs11.so from Debian's
 * libengine-pkcs11-openssl), which lets OpenSSL — and Node's TLS through
 * `privateKeyEngine` — use a key that stays in a token. `$OPENSSL_ENGINES` is searched first.
 * Throws when it is not installed.
 */
export function findOpensslPkcs11Engine(): string {
  const dirs = triplets().flatMap((t) => [`/usr/lib/${t}/engines-3`, `/usr/lib/${t}/engines-1.1`]);
  const fromEnv = process.env.OPENSSL_ENGINES;
  const found = firstExisting([...(fromEnv ? [fromEnv] : []), ...dirs].map((dir) => join(dir, 'pkcs11.so')));
  if (found) return found;
  throw new KeyferryError(
    'key_custody_error',
    'the OpenSSL PKCS#11 engine (pkcs11.so) is not installed; run: apt-get install libengine-pkcs11-openssl',
  );
}

/** Path of SoftHSM2's PKCS#11 module, in Debian's layout first. Throws when it is not installed. */
export function findSofthsmModule(): string {
  const found = firstExisting([
    '/usr/lib/softhsm/libsofthsm2.so',
    ...triplets().map((t) => `/usr/lib/${t}/softhsm/libsofthsm2.so`),
    '/usr/local/lib/softhsm/libsofthsm2.so',
    '/usr/lib64/pkcs11/libsofthsm2.so',
    '/usr/lib/pkcs11/libsofthsm2.so',
  ]);
  if (found) return found;
  throw new KeyferryError(
    'key_custody_error',
    'the SoftHSM2 PKCS#11 module (libsofthsm2.so) is not installed; run: apt-get install softhsm2',
  );
}

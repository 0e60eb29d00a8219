import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Signer, softSigner } from '@keyferry/core';
import type { Command } from 'commander';
import { CliError } from '../cli-error.ts';
import { readSecretFile } from '../settings.ts';

/** Where the root key lives: a file in the PKI dir, or a PKCS#11 token (fioctl's --hsm-* flags). */
export interface HsmOptions {
  hsmModule?: string;
  hsmPin?: string;
  hsmPinFile?: string;
  hsmTokenLabel?: string;
}

export interface Hsm {
  module: string;
  pin: string;
  tokenLabel: string;
}

/** On an HSM the root key is label `root-ca`, id 01 (as fioctl made it). */
export const ROOT_KEY_LABEL = 'root-ca';
export const ROOT_KEY_ID = Uint8Array.of(1);
export const ROOT_KEY_FILE = 'factory_ca.key';
export const ROOT_CERT_FILE = 'factory_ca.pem';

/** fioctl's --hsm-* flags, on every keys ca command that signs with the root. */
export function addHsmOptions(command: Command, use = 'the root CA key is on a PKCS#11 token'): Command {
  return command
    .option('--hsm-module <path>', `${use}: the PKCS#11 module to load`)
    .option('--hsm-pin <pin>', 'the PKCS#11 user PIN of that token; prefer --hsm-pin-file')
    .option(
      '--hsm-pin-file <file>',
      'read the PIN from this file (env KEYFERRY_HSM_PIN_FILE); a command line is visible to others',
    )
    .option('--hsm-token-label <label>', 'the label of that token');
}

/**
 * The three HSM flags go together: none (key file) or all (token). The PIN is --hsm-pin, or
 * read from --hsm-pin-file / KEYFERRY_HSM_PIN_FILE (the env only counts beside --hsm-module).
 */
export function hsmFromOptions(opts: HsmOptions, env = process.env): Hsm | undefined {
  if (opts.hsmPin !== undefined && opts.hsmPinFile !== undefined) {
    throw new CliError('--hsm-pin and --hsm-pin-file both given: pass the PIN one way (prefer the file)', 2);
  }
  const pinFile = opts.hsmPinFile ?? (opts.hsmModule ? env.KEYFERRY_HSM_PIN_FILE : undefined);
  const pin = opts.hsmPin ?? (pinFile ? readSecretFile(pinFile, 'PIN') : undefined);
  const given = {
    '--hsm-module': opts.hsmModule,
    '--hsm-pin': pin,
    '--hsm-token-label': opts.hsmTokenLabel,
  };
  const missing = Object.entries(given).filter(([, v]) => !v);
  if (missing.length === 3) return undefined;
  if (missing.length > 0) {
    throw new CliError(
      `${missing.map(([k]) => k).join(' and ')} missing: the HSM flags --hsm-module, --hsm-pin (or --hsm-pin-file) and --hsm-token-label go together`,
      2,
    );
  }
  return { module: opts.hsmModule!, pin: pin!, tokenLabel: opts.hsmTokenLabel! };
}

export interface RootKey {
  signer: Signer;
  close(): void;
}

/** Opens the root key of an existing PKI dir for signing. */
export async function openRootKey(pkiDir: string, hsm: Hsm | undefined): Promise<RootKey> {
  if (hsm) {
    const { openToken } = await import('@keyferry/pkcs11');
    const token = openToken(hsm);
    try {
      const key = token.findPrivateKey({ label: ROOT_KEY_LABEL });
      if (key === undefined) {
        throw new CliError(
          `token ${hsm.tokenLabel} holds no key labelled ${ROOT_KEY_LABEL}: is this the token keys ca create used?`,
        );
      }
      return { signer: token.signer(key), close: () => token.close() };
    } catch (err) {
      token.close();
      throw err;
    }
  }
  const file = join(pkiDir, ROOT_KEY_FILE);
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch {
    throw new CliError(
      `no root key at ${file}: pass the PKI dir keys ca create wrote, or the --hsm-* flags if the key is on a token`,
    );
  }
  try {
    return { signer: softSigner(createPrivateKey(pem)), close: () => {} };
  } catch (err) {
    throw new CliError(`${file} is not a readable EC private key: ${(err as Error).message}`);
  }
}

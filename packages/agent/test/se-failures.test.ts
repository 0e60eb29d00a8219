import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeyferryError } from '@keyferry/core';
import { describe, expect, it } from 'vitest';
import { seFailure } from '../src/se/pkcs11-errors.ts';
import { SoftSecureElement } from '../src/se/soft-se.ts';

/**
 * A full secure element cannot be made on SoftHSM2 (it has no capacity limit) nor on a
 * directory without mounting a tiny file system, so these check the classification: the
 * errors are built exactly as @keyferry/pkcs11 and node:fs raise them.
 */
describe('a full secure element', () => {
  it('pkcs11: CKR_DEVICE_MEMORY is se_full, message kept', () => {
    const error = new KeyferryError(
      'key_custody_error',
      "token 'aktualizr' is full (CKR_DEVICE_MEMORY) while trying to generate key pair 'SE_83000044'; delete objects it no longer needs",
      { detail: { token: 'aktualizr', ckr: 'CKR_DEVICE_MEMORY' } },
    );
    const failure = seFailure(error);
    expect(failure.kind).toBe('se_full');
    expect(failure.message).toBe(error.message);
  });

  it('soft: ENOSPC while writing is se_full, naming the directory', () => {
    const se = new SoftSecureElement(import.meta.dirname);
    const enospc = Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    const failure = (
      se as unknown as { failure(e: unknown, action: string): Error & { kind: string } }
    ).failure(enospc, 'write SE_83000044.key.pem');
    expect(failure.kind).toBe('se_full');
    expect(failure.message).toBe(
      `soft secure element ${import.meta.dirname} is full (ENOSPC) trying to write SE_83000044.key.pem; free space`,
    );
  });

  it('other custody failures stay se_error', () => {
    const error = new KeyferryError(
      'key_custody_error',
      "token 'aktualizr' failed to sign: CKR_FUNCTION_FAILED",
      {
        detail: { ckr: 'CKR_FUNCTION_FAILED' },
      },
    );
    expect(seFailure(error).kind).toBe('se_error');
  });
});

describe('a soft secure element whose certificate file is damaged', () => {
  it('is se_error naming the file and what to do, not an unexpected fault', () => {
    const dir = mkdtempSync(join(tmpdir(), 'keyferry-soft-se-'));
    try {
      const se = new SoftSecureElement(dir);
      const file = se.certificatePath(0x83000043);
      // what a cut write leaves: a PEM block that never ends
      writeFileSync(file, '-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n');
      let failure: (Error & { kind?: string }) | undefined;
      try {
        se.getCertificate(0x83000043);
      } catch (error) {
        failure = error as Error & { kind?: string };
      }
      expect(failure?.kind).toBe('se_error');
      expect(failure?.message).toMatch(
        new RegExp(
          `^${file} is not a PEM certificate \\(.*\\); remove it and run keyferry-agent auto-register again`,
        ),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fromPem, splitPemBundle, toPem, writeFileAtomic } from '@keyferry/core';
import { AgentError } from '../agent-error.ts';
import {
  hexId,
  IDENTITY_CERT_ID,
  IDENTITY_KEY_ID,
  type SecureElement,
  type SeIdentity,
  type SeObject,
  seLabel,
  type TlsKeyOptions,
} from './port.ts';
import { signDigestP256 } from './soft-ecdsa.ts';

/**
 * The soft secure element: a directory, laid out as keyferry-sim writes it
 * (packages/sim/README.md): `uid` (36 lowercase hex digits), `SE_<id>.key.pem` (PKCS#8 PEM)
 * and `SE_<id>.pem` (certificate PEM), every file 0600. For development and large simulated
 * fleets: the keys are files, so nothing here resists someone who can read the directory.
 */
export const SOFT_FILES = {
  uid: 'uid',
  key: (objectId: number) => `${seLabel(objectId)}.key.pem`,
  certificate: (objectId: number) => `${seLabel(objectId)}.pem`,
} as const;

export class SoftSecureElement implements SecureElement {
  readonly backend = 'soft';
  readonly description: string;

  constructor(readonly dir: string) {
    this.description = `soft secure element ${dir}`;
    let isDir = false;
    try {
      isDir = statSync(dir).isDirectory();
    } catch {
      // reported below
    }
    if (!isDir) {
      throw new AgentError(
        'se_token',
        `SE_DIR ${dir} is not a directory; make a soft secure element with: keyferry-sim se05x create --dir ${dir}`,
      );
    }
  }

  /** Path of an object's file (the sota.toml of the soft backend points aktualizr-lite at them). */
  keyPath(objectId: number): string {
    return join(this.dir, SOFT_FILES.key(objectId));
  }

  certificatePath(objectId: number): string {
    return join(this.dir, SOFT_FILES.certificate(objectId));
  }

  private read(path: string): string | undefined {
    try {
      return readFileSync(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw this.failure(error, `read ${path}`);
    }
  }

  private write(path: string, text: string): void {
    try {
      writeFileAtomic(path, text, 0o600);
    } catch (error) {
      throw this.failure(error, `write ${path}`);
    }
  }

  private failure(error: unknown, action: string): AgentError {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') {
      return new AgentError(
        'se_full',
        `${this.description} is full (${code}) trying to ${action}; free space`,
        {
          cause: error,
        },
      );
    }
    return new AgentError('se_error', `${this.description}: could not ${action}: ${code ?? String(error)}`, {
      cause: error,
    });
  }

  uid(): Uint8Array {
    const text = this.read(join(this.dir, SOFT_FILES.uid))?.trim();
    if (text === undefined || !/^[0-9a-f]{36}$/.test(text)) {
      throw new AgentError(
        'se_no_identity',
        `${this.description} has no vendor UID (file ${SOFT_FILES.uid} with 36 lowercase hex digits)`,
      );
    }
    return Uint8Array.from(Buffer.from(text, 'hex'));
  }

  private privateKey(objectId: number): KeyObject | undefined {
    const pem = this.read(this.keyPath(objectId));
    if (pem === undefined) return undefined;
    let key: KeyObject;
    try {
      key = createPrivateKey(pem);
    } catch (error) {
      throw this.foreign(objectId, `the file is not a private key: ${(error as Error).message}`);
    }
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw this.foreign(objectId, 'it is not a P-256 key');
    }
    return key;
  }

  private foreign(objectId: number, why: string): AgentError {
    return new AgentError(
      'se_foreign_key',
      `${this.description}: object ${hexId(objectId)} holds a key keyferry-agent did not generate (${why}); ` +
        `remove ${this.keyPath(objectId)} if the key is not needed`,
    );
  }

  identity(): SeIdentity {
    const key = this.read(this.keyPath(IDENTITY_KEY_ID));
    const certs = this.read(this.certificatePath(IDENTITY_CERT_ID));
    const chain = certs === undefined ? [] : splitPemBundle(certs);
    if (key === undefined || chain.length === 0) {
      throw new AgentError(
        'se_no_identity',
        `${this.description} lacks the vendor identity (${SOFT_FILES.key(IDENTITY_KEY_ID)} and ${SOFT_FILES.certificate(IDENTITY_CERT_ID)})`,
      );
    }
    return { certificateChain: chain, tls: { key } };
  }

  tlsKey(objectId: number): TlsKeyOptions {
    const key = this.read(this.keyPath(objectId));
    if (key === undefined) {
      throw new AgentError('se_error', `${this.description} has no key ${seLabel(objectId)} to connect with`);
    }
    return { key };
  }

  generateKeyPair(objectId: number): Uint8Array {
    if (this.publicKey(objectId) !== undefined) {
      throw new AgentError(
        'se_foreign_key',
        `${this.description} already holds key ${seLabel(objectId)} (${hexId(objectId)}); it is kept — delete it first to replace it`,
      );
    }
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    this.write(this.keyPath(objectId), privateKey.export({ format: 'pem', type: 'pkcs8' }).toString());
    return Uint8Array.from(publicKey.export({ format: 'der', type: 'spki' }));
  }

  publicKey(objectId: number): Uint8Array | undefined {
    const key = this.privateKey(objectId);
    return key && Uint8Array.from(createPublicKey(key).export({ format: 'der', type: 'spki' }));
  }

  sign(objectId: number, digest: Uint8Array): Uint8Array {
    const key = this.privateKey(objectId);
    if (key === undefined) {
      throw new AgentError('se_error', `${this.description} has no key ${seLabel(objectId)} to sign with`);
    }
    return signDigestP256(key, digest);
  }

  putCertificate(objectId: number, der: Uint8Array): void {
    this.write(this.certificatePath(objectId), toPem(der, 'CERTIFICATE'));
  }

  getCertificate(objectId: number): Uint8Array | undefined {
    const path = this.certificatePath(objectId);
    const pem = this.read(path);
    if (pem === undefined) return undefined;
    try {
      return fromPem(pem, 'CERTIFICATE');
    } catch (error) {
      throw new AgentError(
        'se_error',
        `${path} is not a PEM certificate (${(error as Error).message}); remove it and run keyferry-agent auto-register again, which enrolls the key again`,
        { cause: error },
      );
    }
  }

  delete(objectId: number): number {
    let removed = 0;
    for (const path of [this.keyPath(objectId), this.certificatePath(objectId)]) {
      try {
        statSync(path);
        rmSync(path);
        removed++;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw this.failure(error, `remove ${path}`);
      }
    }
    return removed;
  }

  list(): SeObject[] {
    const out: SeObject[] = [];
    for (const name of readdirSync(this.dir)) {
      const match = /^(SE_([0-9a-f]{8}))\.(key\.pem|pem)$/.exec(name);
      if (!match?.[1] || !match[2]) continue;
      const kind = match[3] === 'pem' ? 'certificate' : 'key';
      out.push({ objectId: Number.parseInt(match[2], 16), kind, label: match[1] });
    }
    return out.sort((a, b) => a.objectId - b.objectId || a.kind.localeCompare(b.kind));
  }

  close(): void {}
}

import { dirname } from 'node:path';
import { ecdsaRawToDer } from '@keyferry/core';
import { findOpensslPkcs11Engine, opensslEngineKeyUri, openToken, type Token } from '@keyferry/pkcs11';
import { AgentError } from '../agent-error.ts';
import { seFailure } from './pkcs11-errors.ts';
import { pkcs11IdFor } from './pkcs11-ids.ts';
import {
  hexId,
  IDENTITY_CERT_ID,
  IDENTITY_KEY_ID,
  type SecureElement,
  type SeIdentity,
  type SeObject,
  seLabel,
  type TlsKeyOptions,
  UID_OBJECT_ID,
} from './port.ts';

export interface Pkcs11SeOptions {
  readonly module: string;
  readonly tokenLabel: string;
  readonly pin: string;
  readonly genericKeypairs: readonly number[];
}

/**
 * The secure element behind a PKCS#11 module: SoftHSM2 in tests and simulations, the SE05x's
 * own module (or OP-TEE's libckteec) on a device. Objects are found by label `SE_<id>`;
 * keys and certificates also carry the CKA_ID aktualizr-lite looks for ({@link pkcs11IdFor}).
 */
export class Pkcs11SecureElement implements SecureElement {
  readonly backend = 'pkcs11';
  readonly description: string;
  private readonly token: Token;

  constructor(private readonly options: Pkcs11SeOptions) {
    this.description = `token '${options.tokenLabel}' in ${options.module}`;
    try {
      this.token = openToken({ module: options.module, tokenLabel: options.tokenLabel, pin: options.pin });
    } catch (error) {
      throw seFailure(error);
    }
  }

  private run<T>(fn: () => T): T {
    try {
      return fn();
    } catch (error) {
      throw seFailure(error);
    }
  }

  private selector(objectId: number) {
    return { label: seLabel(objectId), id: pkcs11IdFor(objectId, this.options.genericKeypairs) };
  }

  uid(): Uint8Array {
    const uid = this.run(() => this.token.getData({ label: seLabel(UID_OBJECT_ID) }));
    if (uid === undefined || uid.length !== 18) {
      throw new AgentError(
        'se_no_identity',
        `${this.description} has no vendor UID (data object '${seLabel(UID_OBJECT_ID)}', 18 bytes); ` +
          'this is not a provisioned SE05x token (keyferry-sim se05x create --pkcs11 makes one)',
      );
    }
    return Uint8Array.from(uid);
  }

  identity(): SeIdentity {
    const keyLabel = seLabel(IDENTITY_KEY_ID);
    const certLabel = seLabel(IDENTITY_CERT_ID);
    const key = this.run(() => this.token.findPrivateKey({ label: keyLabel }));
    const cert = this.run(() => this.token.getCertificate({ label: certLabel }));
    if (key === undefined || cert === undefined) {
      const missing = [
        key ? undefined : `key '${keyLabel}'`,
        cert ? undefined : `certificate '${certLabel}'`,
      ];
      throw new AgentError(
        'se_no_identity',
        `${this.description} lacks the vendor identity (${missing.filter(Boolean).join(' and ')}); ` +
          'the secure element must hold the identity injected at chip manufacture',
      );
    }
    return { certificateChain: [Uint8Array.from(cert)], tls: this.tlsKey(IDENTITY_KEY_ID) };
  }

  tlsKey(objectId: number): TlsKeyOptions {
    // libp11 inside this process loads the module from here; Node's TLS passes it nothing else.
    process.env.PKCS11_MODULE_PATH = this.token.module;
    // Named by id, found in OPENSSL_ENGINES: given a path, OpenSSL first tries the path as an
    // id and libp11 prints "bad engine id" to stderr on every connection before it loads.
    process.env.OPENSSL_ENGINES = dirname(this.run(() => findOpensslPkcs11Engine()));
    return {
      privateKeyEngine: 'pkcs11',
      privateKeyIdentifier: opensslEngineKeyUri({
        tokenLabel: this.options.tokenLabel,
        objectLabel: seLabel(objectId),
        pin: this.options.pin,
      }),
    };
  }

  generateKeyPair(objectId: number): Uint8Array {
    const existing = this.publicKey(objectId);
    if (existing !== undefined) {
      throw new AgentError(
        'se_foreign_key',
        `${this.description} already holds key ${seLabel(objectId)} (${hexId(objectId)}); ` +
          'it is kept — delete it first to replace it',
      );
    }
    const { publicKeySpki } = this.run(() => this.token.generateEcKeyPair(this.selector(objectId)));
    return Uint8Array.from(publicKeySpki);
  }

  publicKey(objectId: number): Uint8Array | undefined {
    const wanted = this.selector(objectId);
    const byLabel = this.run(() => this.token.findPrivateKey({ label: wanted.label }));
    const byId = this.run(() => this.token.findPrivateKey({ id: wanted.id }));
    if (byLabel === undefined && byId === undefined) return undefined;
    const foreign = (why: string) =>
      new AgentError(
        'se_foreign_key',
        `${this.description}: object ${hexId(objectId)} holds a key keyferry-agent did not generate (${why}); ` +
          `remove it (pkcs11-tool --delete-object --type privkey --label ${wanted.label}) if the key is not needed`,
      );
    if (
      byLabel === undefined ||
      byId === undefined ||
      !byLabel.id.equals(byId.id) ||
      byLabel.label !== byId.label
    ) {
      const found = byLabel ?? byId;
      throw foreign(
        `found label '${found?.label ?? ''}' with id ${found?.id.toString('hex') ?? ''}, expected '${wanted.label}' with id ${wanted.id.toString('hex')}`,
      );
    }
    const attributes = this.run(() => this.token.keyAttributes(byLabel));
    if (
      attributes.extractable !== false ||
      attributes.neverExtractable !== true ||
      attributes.alwaysSensitive !== true
    ) {
      throw foreign(
        'it is or was extractable, so it was imported rather than generated in the secure element',
      );
    }
    return Uint8Array.from(this.run(() => this.token.publicKeySpki(byLabel)));
  }

  sign(objectId: number, digest: Uint8Array): Uint8Array {
    const raw = this.run(() => this.token.signDigest(this.selector(objectId), digest));
    return ecdsaRawToDer(raw);
  }

  putCertificate(objectId: number, der: Uint8Array): void {
    this.run(() => this.token.putCertificate({ ...this.selector(objectId), der }));
  }

  getCertificate(objectId: number): Uint8Array | undefined {
    const der = this.run(() => this.token.getCertificate({ label: seLabel(objectId) }));
    return der === undefined ? undefined : Uint8Array.from(der);
  }

  delete(objectId: number): number {
    return this.run(() => this.token.deleteObjects({ label: seLabel(objectId) }));
  }

  list(): SeObject[] {
    const kinds = { private: 'key', certificate: 'certificate', data: 'data' } as const;
    const out: SeObject[] = [];
    for (const object of this.run(() => this.token.listObjects())) {
      const match = /^SE_([0-9a-f]{8})$/.exec(object.label ?? '');
      const kind = kinds[object.class as keyof typeof kinds];
      if (!match?.[1] || kind === undefined) continue;
      out.push({ objectId: Number.parseInt(match[1], 16), kind, label: object.label ?? '' });
    }
    return out.sort((a, b) => a.objectId - b.objectId || a.kind.localeCompare(b.kind));
  }

  close(): void {
    this.token.close();
  }
}

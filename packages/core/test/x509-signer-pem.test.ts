import { createHash, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  ecdsaDerToRaw,
  ecdsaRawToDer,
  fromPem,
  KeyferryError,
  sha256,
  softSigner,
  splitPemBundle,
  toPem,
} from '../src/index.ts';
import { newSigner } from './support/openssl.ts';

describe('softSigner', () => {
  it('signs SHA-256(data) with a DER ECDSA signature that node verifies with its public key', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const signer = softSigner(privateKey);
    const data = new TextEncoder().encode('tbs bytes');
    const signature = await signer.sign(data);
    expect(signature[0]).toBe(0x30);
    expect(verify('sha256', data, { key: publicKey, dsaEncoding: 'der' }, signature)).toBe(true);
    expect(Buffer.from(signer.publicKeySpki)).toEqual(publicKey.export({ format: 'der', type: 'spki' }));
  });

  it('refuses keys other than private P-256', () => {
    expect(() => softSigner(generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey)).toThrow(/P-256/);
    expect(() => softSigner(generateKeyPairSync('ed25519').privateKey)).toThrow(TypeError);
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(() => softSigner(publicKey)).toThrow(/private EC key/);
  });

  it('sha256 matches node:crypto', () => {
    const data = Uint8Array.of(1, 2, 3);
    expect(Buffer.from(sha256(data)).toString('hex')).toBe(createHash('sha256').update(data).digest('hex'));
  });
});

describe('ECDSA signature conversion', () => {
  it('converts raw r||s to the DER node produces for the same signature, and back', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    // Enough signatures that some have r or s with a high bit (sign octet) or a leading zero.
    for (let i = 0; i < 200; i++) {
      const data = Uint8Array.of(i);
      const raw = sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' });
      const der = ecdsaRawToDer(raw);
      expect(verify('sha256', data, { key: createPublicKey(privateKey), dsaEncoding: 'der' }, der)).toBe(
        true,
      );
      expect(Buffer.from(ecdsaDerToRaw(der))).toEqual(raw);
    }
  });

  it('handles numbers with high bits and leading zeros exactly', () => {
    const raw = new Uint8Array(64);
    raw[0] = 0x80; // r needs a sign octet
    raw[63] = 0x01; // s is 1: all leading zeros dropped
    const der = ecdsaRawToDer(raw);
    expect(Buffer.from(der.subarray(0, 5)).toString('hex')).toBe('3026022100');
    expect(Buffer.from(der.subarray(-3)).toString('hex')).toBe('020101');
    expect(Buffer.from(ecdsaDerToRaw(der))).toEqual(Buffer.from(raw));
  });

  it('refuses malformed input', () => {
    expect(() => ecdsaRawToDer(new Uint8Array(63))).toThrow(TypeError);
    expect(() => ecdsaDerToRaw(Uint8Array.of(0x30, 0x03, 0x02, 0x01))).toThrow(/not a DER ECDSA signature/);
    const tooBig = ecdsaRawToDer(new Uint8Array(96).fill(0x11));
    expect(() => ecdsaDerToRaw(tooBig, 32)).toThrow(/more than 32/);
    expect(ecdsaDerToRaw(tooBig, 48)).toHaveLength(96);
  });
});

describe('PEM', () => {
  const der = Uint8Array.from({ length: 100 }, (_, i) => i);

  it('writes 64-column base64 ending with a newline and reads it back', () => {
    const pem = toPem(der, 'CERTIFICATE');
    expect(pem.endsWith('-----END CERTIFICATE-----\n')).toBe(true);
    expect(pem.split('\n')[1]).toHaveLength(64);
    expect(fromPem(pem, 'CERTIFICATE')).toEqual(der);
  });

  it('tolerates CRLF, surrounding text and no trailing newline', () => {
    const pem = 'subject=CN = x\r\n' + toPem(der, 'CERTIFICATE').replace(/\n/g, '\r\n').trimEnd();
    expect(fromPem(pem)).toEqual(der);
    expect(splitPemBundle(pem)).toEqual([der]);
  });

  it('splits a bundle into certificates in order and skips other blocks', () => {
    const other = Uint8Array.of(9, 9, 9);
    const bundle = toPem(der, 'CERTIFICATE') + toPem(other, 'PRIVATE KEY') + toPem(other, 'CERTIFICATE');
    expect(splitPemBundle(bundle)).toEqual([der, other]);
    expect(splitPemBundle('no pem here')).toEqual([]);
  });

  it('picks the labelled block and refuses a missing one with the matching code', () => {
    const text = toPem(Uint8Array.of(1), 'PRIVATE KEY') + toPem(der, 'CERTIFICATE REQUEST');
    expect(fromPem(text, 'CERTIFICATE REQUEST')).toEqual(der);
    expect(fromPem(toPem(der, 'NEW CERTIFICATE REQUEST'), 'CERTIFICATE REQUEST')).toEqual(der);
    const error = catchError(() => fromPem(text, 'CERTIFICATE'));
    expect(error).toBeInstanceOf(KeyferryError);
    expect(error).toMatchObject({ code: 'certificate_invalid' });
    expect(error.message).toContain('found PRIVATE KEY, CERTIFICATE REQUEST');
    expect(catchError(() => fromPem('', 'CERTIFICATE REQUEST'))).toMatchObject({ code: 'csr_invalid' });
  });

  it('refuses corrupt blocks', () => {
    const bad = '-----BEGIN CERTIFICATE-----\nAAA*AAA\n-----END CERTIFICATE-----\n';
    expect(() => fromPem(bad)).toThrow(/outside base64/);
    const mismatched = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END X509 CRL-----\n';
    expect(() => fromPem(mismatched)).toThrow(/ends with END X509 CRL/);
    const encrypted =
      '-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END CERTIFICATE-----\n';
    expect(() => fromPem(encrypted)).toThrow(/headers/);
  });

  it('round-trips a real signer key through PEM', () => {
    const signer = newSigner();
    expect(fromPem(toPem(signer.publicKeySpki, 'PUBLIC KEY'), 'PUBLIC KEY')).toEqual(signer.publicKeySpki);
  });
});

function catchError(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a throw');
}

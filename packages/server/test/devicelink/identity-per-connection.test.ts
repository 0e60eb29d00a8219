import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { identityCertificate, loadOrCreateVendorCa, randomUid } from '@keyferry/sim';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { type IdentityClaim, socketIdentity } from '../../src/devicelink/identity.ts';
import { TrustAnchors } from '../../src/devicelink/trust-anchors.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'keyferry-identity-'));
const vendor = await loadOrCreateVendorCa(join(dataDir, 'sim'));
const anchors = new TrustAnchors({ dataDir, products: [] }, true, pino({ level: 'silent' }));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

async function identity(signer = vendor, validity?: { days: number }) {
  const uid = randomUid();
  const der = await identityCertificate({
    vendor: signer,
    uid,
    ...(validity ? { validity } : {}),
    product: '935389312472',
    publicKeySpki: new Uint8Array(
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' }),
    ),
  });
  return { uid, der };
}

/** A TLS socket as the handler sees it, counting how often its peer certificate is read. */
function socketWith(der: Uint8Array) {
  const reads = { count: 0 };
  const socket = {
    getPeerX509Certificate() {
      reads.count++;
      return new X509Certificate(der);
    },
  } as unknown as TLSSocket;
  return { socket, reads };
}

describe('device-link identity, verified once per TLS connection', () => {
  it('verifies on the first request and reuses the result for the next ones on that connection', async () => {
    const { uid, der } = await identity();
    const { socket, reads } = socketWith(der);
    const claims: IdentityClaim[] = [{}, {}, {}];
    const first = socketIdentity(socket, anchors, claims[0]!);
    expect(first.deviceId.hex).toBe(uid.hex);
    expect(socketIdentity(socket, anchors, claims[1]!)).toBe(first);
    expect(socketIdentity(socket, anchors, claims[2]!)).toBe(first);
    expect(reads.count).toBe(1);
    // every request's audit trail still names the device
    for (const claim of claims) expect(claim).toEqual({ deviceId: uid.decimal, nc12: '935389312472' });
    // another connection is verified on its own
    const other = socketWith(der);
    expect(socketIdentity(other.socket, anchors, {})).not.toBe(first);
    expect(other.reads.count).toBe(1);
  });

  it('refuses a request of a kept-alive connection once its identity has expired', async () => {
    const { der } = await identity(vendor, { days: 2 });
    const { socket, reads } = socketWith(der);
    const notAfter = new Date(new X509Certificate(der).validTo);
    const first = socketIdentity(socket, anchors, {}, new Date(notAfter.getTime() - 86_400_000));
    expect(socketIdentity(socket, anchors, {}, notAfter)).toBe(first);
    const after = new Date(notAfter.getTime() + 1000);
    for (let i = 0; i < 2; i++) {
      expect(() => socketIdentity(socket, anchors, {}, after)).toThrow(
        /does not verify for product 935389312472: .*expired/,
      );
    }
    expect(reads.count).toBe(1);
  });

  it('keeps no refusal: an untrusted identity is refused on every request of its connection', async () => {
    const stranger = await loadOrCreateVendorCa(join(dataDir, 'stranger'));
    const { der } = await identity(stranger);
    const { socket, reads } = socketWith(der);
    for (let i = 0; i < 2; i++) {
      const claim: IdentityClaim = {};
      expect(() => socketIdentity(socket, anchors, claim)).toThrow(
        /does not verify for product 935389312472/,
      );
      expect(claim.nc12).toBe('935389312472');
    }
    // the certificate is read once; what it proves is judged again on each request
    expect(reads.count).toBe(1);
  });
});

import { afterAll, describe, expect, it } from 'vitest';
import {
  buildCrl,
  factoryRootProfile,
  type KeyferryError,
  MAX_CRL_BYTES,
  parseCertificate,
  parseCrl,
  verifyCrlSignature,
} from '../src/index.ts';
import { newSigner, openssl, pemToDer, scratchDir } from './support/openssl.ts';

const dir = scratchDir();
afterAll(() => dir.cleanup());

/** A CRL made by `openssl ca -gencrl` alone: root, index and reasons written as openssl reads them. */
function opensslCrl(): { crl: Uint8Array; root: Uint8Array } {
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', dir.path('root.key')]);
  openssl([
    'req',
    '-x509',
    '-new',
    '-key',
    dir.path('root.key'),
    '-subj',
    '/OU=acme/CN=Factory-CA',
    '-days',
    '30',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
    '-out',
    dir.path('root.pem'),
  ]);
  dir.write(
    'index.txt',
    [
      'R\t300101000000Z\t240101000000Z,keyCompromise\t0A1B\tunknown\t/CN=a',
      'R\t300101000000Z\t240101000000Z,certificateHold\t0C\tunknown\t/CN=b',
      'R\t300101000000Z\t240101000000Z,removeFromCRL\t7F00\tunknown\t/CN=c',
      'R\t300101000000Z\t240101000000Z\t00FF\tunknown\t/CN=d',
      '',
    ].join('\n'),
  );
  dir.write('crlnumber', '01\n');
  dir.write(
    'ca.cnf',
    `[ca]\ndefault_ca=d\n[d]\ndatabase=${dir.path('index.txt')}\ncrlnumber=${dir.path('crlnumber')}\ndefault_md=sha256\ndefault_crl_days=1\n`,
  );
  openssl([
    'ca',
    '-gencrl',
    '-config',
    dir.path('ca.cnf'),
    '-keyfile',
    dir.path('root.key'),
    '-cert',
    dir.path('root.pem'),
    '-out',
    dir.path('crl.pem'),
  ]);
  return {
    crl: pemToDer(openssl(['crl', '-in', dir.path('crl.pem')])),
    root: pemToDer(openssl(['x509', '-in', dir.path('root.pem')])),
  };
}

describe('parseCrl', () => {
  it("reads openssl's CRL: issuer, dates, serials and reason codes, and its signature verifies", () => {
    const { crl, root } = opensslCrl();
    const parsed = parseCrl(crl);
    const rootCert = parseCertificate(root);
    expect(Buffer.from(parsed.issuer.der).equals(Buffer.from(rootCert.subject.der))).toBe(true);
    expect(parsed.nextUpdate!.getTime() - parsed.thisUpdate.getTime()).toBe(86_400_000);
    const bySerial = Object.fromEntries(parsed.entries.map((e) => [e.serialHex, e]));
    expect(Object.keys(bySerial).sort()).toEqual(['0a1b', '0c', '7f00', 'ff']);
    expect(bySerial['0a1b']?.reasonCode).toBe(1);
    expect(bySerial['0c']?.reasonCode).toBe(6);
    expect(bySerial['7f00']?.reasonCode).toBe(8);
    expect(bySerial.ff?.reasonCode).toBeUndefined();
    expect(bySerial['0c']?.revokedAt.toISOString()).toBe('2024-01-01T00:00:00.000Z');
    expect(verifyCrlSignature(parsed, rootCert.spki)).toBe(true);
    expect(verifyCrlSignature(parsed, parseCertificate(root).spki.slice(0, -1))).toBe(false);
  });

  it('round-trips buildCrl and refuses what is not a CRL, or too large', async () => {
    const signer = newSigner();
    const root = await factoryRootProfile({ factory: 'acme', signer });
    const now = new Date('2026-01-02T03:04:05Z');
    const der = await buildCrl({
      issuerCert: root,
      signer,
      revoked: [{ serialHex: '01ab', revokedAt: now, reason: 'privilegeWithdrawn' }],
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + 60_000),
      crlNumber: 1,
    });
    const parsed = parseCrl(der);
    expect(parsed.entries).toEqual([{ serialHex: '01ab', revokedAt: now, reasonCode: 9 }]);
    expect(verifyCrlSignature(parsed, signer.publicKeySpki)).toBe(true);
    expect(verifyCrlSignature(parsed, newSigner().publicKeySpki)).toBe(false);
    const refused = (input: Uint8Array) => {
      try {
        parseCrl(input);
      } catch (err) {
        return (err as KeyferryError).code;
      }
      return 'accepted';
    };
    expect(refused(root)).toBe('certificate_invalid');
    expect(refused(Uint8Array.of(0x30, 0x00))).toBe('certificate_invalid');
    expect(refused(new Uint8Array(MAX_CRL_BYTES + 1))).toBe('certificate_invalid');
  });
});

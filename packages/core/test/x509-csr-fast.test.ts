import { afterAll, describe, expect, it } from 'vitest';
import {
  createCsr,
  KeyferryError,
  type ParsedCsr,
  parseAndVerifyCsr,
  parseCsr,
  verifyCsr,
} from '../src/index.ts';
import { parseCsrReference } from '../src/x509/csr-reference.ts';
import { newSigner, openssl, pemToDer, scratchDir } from './support/openssl.ts';

const dir = scratchDir();
afterAll(() => dir.cleanup());

const P256 = ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'];
const P384 = ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'];
const RSA = ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'];
// string_mask=default makes openssl write T61String/BMPString values the fast reader leaves to the library.
const CONFIG = dir.write('req.cnf', '[req]\ndistinguished_name=dn\nstring_mask=default\n[dn]\n');

function opensslCsr(keyArgs: readonly string[], args: readonly string[]): Uint8Array {
  const key = dir.path(`key-${Math.random().toString(36).slice(2)}.pem`);
  openssl(['genpkey', ...keyArgs, '-out', key]);
  return pemToDer(openssl(['req', '-new', '-key', key, ...args]));
}

/** Everything but `der` (the same object) and `toString` (a closure), as plain data. */
function plain(csr: ParsedCsr): unknown {
  const { subject, ...rest } = csr;
  return {
    ...rest,
    subject: { der: subject.der, rdns: subject.rdns, text: subject.text, attributes: subject.attributes },
    subjectString: String(subject),
  };
}

const CASES: ReadonlyArray<readonly [string, () => Promise<Uint8Array> | Uint8Array]> = [
  [
    'ours, with SANs',
    () =>
      createCsr({
        subject: { O: 'Acme', CN: 'gw' },
        dnsNames: ['a.example', '*.b.example'],
        signer: newSigner(),
      }),
  ],
  [
    'ours, no SANs, list subject',
    () =>
      createCsr({
        subject: [
          ['CN', 'x'],
          ['serialNumber', '42'],
        ],
        signer: newSigner(),
      }),
  ],
  [
    'openssl P-256, SANs of several types',
    () =>
      opensslCsr(P256, [
        '-subj',
        '/C=DE/O=Acme/CN=device 1',
        '-addext',
        'subjectAltName=DNS:a.example,IP:10.0.0.1,email:x@y.example,DNS:b.example',
      ]),
  ],
  [
    'openssl P-256, SAN among other extensions',
    () =>
      opensslCsr(P256, [
        '-subj',
        '/CN=d',
        '-addext',
        'subjectAltName=DNS:c.example',
        '-addext',
        'keyUsage=critical,digitalSignature',
        '-addext',
        'basicConstraints=CA:FALSE',
      ]),
  ],
  [
    'openssl P-256, UTF-8, escaped and multi-valued subject',
    () =>
      opensslCsr(P256, [
        '-utf8',
        '-multivalue-rdn',
        '-subj',
        '/DC=example/CN=Müller, Jörg+OU=#ops/emailAddress=a@b.example',
      ]),
  ],
  [
    'openssl P-256, T61String subject (library fallback)',
    () => opensslCsr(P256, ['-config', CONFIG, '-utf8', '-subj', '/CN=Müller/O=a\\,b']),
  ],
  [
    'openssl P-384 with SHA-384',
    () => opensslCsr(P384, ['-sha384', '-subj', '/CN=p384', '-addext', 'subjectAltName=DNS:p.example']),
  ],
  ['openssl RSA-2048', () => opensslCsr(RSA, ['-subj', '/O=Acme/CN=rsa'])],
  ['openssl Ed25519', () => opensslCsr(['-algorithm', 'ED25519'], ['-subj', '/CN=ed'])],
];

describe('the direct DER reader agrees with the ASN.1 library reader', () => {
  it.each(CASES)('%s', async (_name, make) => {
    const der = await make();
    const fast = parseCsr(der);
    const reference = parseCsrReference(der);
    expect(plain(fast)).toEqual(plain(reference));
    expect(fast.der).toBe(der);
  });

  it('reads what openssl says: algorithm, subject and SANs', () => {
    const der = opensslCsr(P384, [
      '-sha384',
      '-subj',
      '/O=Acme/CN=x',
      '-addext',
      'subjectAltName=DNS:one.example,DNS:two.example',
    ]);
    const csr = parseCsr(der);
    const text = openssl(['req', '-inform', 'DER', '-noout', '-text', '-nameopt', 'RFC2253'], der);
    expect(text).toContain(`Subject: ${csr.subject.text}`);
    expect(text).toContain('ecdsa-with-SHA384');
    expect(csr.signatureAlgorithm).toBe('1.2.840.10045.4.3.3');
    expect(csr.keyAlgorithm).toBe('P-384');
    expect(csr.dnsNames).toEqual(['one.example', 'two.example']);
  });

  it('reads a request without the [0] attributes field as the library does', async () => {
    const der = await createCsr({ subject: { CN: 'x' }, signer: newSigner() });
    // Drop the trailing empty [0] (a0 00) of certificationRequestInfo and fix the two lengths.
    const at = Buffer.from(der).lastIndexOf(Buffer.from([0xa0, 0x00]));
    const cut = Uint8Array.from([...der.subarray(0, at), ...der.subarray(at + 2)]);
    expect(cut[1]).toBe(0x81);
    cut[2]! -= 2;
    cut[4]! -= 2;
    expect(plain(parseCsr(cut))).toEqual(plain(parseCsrReference(cut)));
    // The signature covered the attributes, so the shortened request does not verify.
    expect(() => parseAndVerifyCsr(cut)).toThrow(/does not verify/);
  });

  it('refuses what follows the attributes, and a malformed SAN, with csr_invalid', async () => {
    const der = await createCsr({ subject: { CN: 'x' }, dnsNames: ['a.example'], signer: newSigner() });
    const extra = Uint8Array.from([...der]);
    // Turn the SAN's SEQUENCE tag inside the extnValue OCTET STRING into a SET.
    const san = Buffer.from(extra).indexOf(Buffer.from([0x06, 0x03, 0x55, 0x1d, 0x11, 0x04]));
    extra[san + 7] = 0x31;
    expect(() => parseCsrReference(extra)).toThrow();
    expect(refusal(() => parseCsr(extra)).message).toMatch(/^CSR content is malformed: /);
  });
});

describe('verifyCsr key import', () => {
  it('refuses a P-256 point that is not on the curve, before checking the signature', async () => {
    const signer = newSigner();
    const der = (await createCsr({ subject: { CN: 'x' }, signer })).slice();
    const at = Buffer.from(der).indexOf(Buffer.from(signer.publicKeySpki));
    der[at + signer.publicKeySpki.length - 1]! ^= 0x01; // last byte of y
    const csr = parseCsr(der);
    expect(csr.keyAlgorithm).toBe('P-256');
    expect(refusal(() => verifyCsr(csr)).message).toBe('CSR public key is not a valid P-256 key');
  });
});

function refusal(fn: () => unknown): KeyferryError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(KeyferryError);
    expect((error as KeyferryError).code).toBe('csr_invalid');
    return error as KeyferryError;
  }
  throw new Error('expected csr_invalid');
}

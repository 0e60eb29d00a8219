import { describe, expect, it } from 'vitest';
import { KeyferryError, type ParsedCsr, parseCsr } from '../src/index.ts';
import { parseCsrReference } from '../src/x509/csr-reference.ts';

/**
 * Valid requests made once with openssl 3 (fixed bytes, so a seed gives the same mutations on
 * every run): P-256 with one SAN, P-256 without extensions, P-256 with a challengePassword
 * attribute and a SAN, P-384 with SHA-384 and a SAN, RSA-1024.
 */
const SAMPLES: Record<string, string> = {
  'P-256, SAN':
    'MIIBATCBqAIBADAeMQ0wCwYDVQQKDARBY21lMQ0wCwYDVQQDDARkZXYxMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEn0lhtVLae1XS1Sd5f+2KT6hXM05URqjjK1crRJZiSFN5EhOStCDZr6Pre1eEOb64GzdsEZRKJ50BAcLnVf2QdKAoMCYGCSqGSIb3DQEJDjEZMBcwFQYDVR0RBA4wDIIKZDEuZXhhbXBsZTAKBggqhkjOPQQDAgNIADBFAiA4NGTlHxEdchxx6zJU/3I/q70Q4Pr8U36vzH3GdBUgKwIhANt6R1ZYr9avujq4UUU17fgoaa0QS6VEyOoVD/QRYw0X',
  'P-256, no SAN':
    'MIHYMIGAAgEAMB4xDTALBgNVBAoMBEFjbWUxDTALBgNVBAMMBGRldjIwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASfSWG1Utp7VdLVJ3l/7YpPqFczTlRGqOMrVytElmJIU3kSE5K0INmvo+t7V4Q5vrgbN2wRlEonnQEBwudV/ZB0oAAwCgYIKoZIzj0EAwIDRwAwRAIgQgGdhdyOh/lsMMPgVuOmARGEXDnUXymDXmqV4vZ+yNACIHjhX/e9/EZTw4VMBw1CHSitISvRmxbxdP0mD192oj6L',
  'P-256, challengePassword':
    'MIIBCjCBsQIBADANMQswCQYDVQQDDAJjcDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABJ9JYbVS2ntV0tUneX/tik+oVzNOVEao4ytXK0SWYkhTeRITkrQg2a+j63tXhDm+uBs3bBGUSiedAQHC51X9kHSgQjAYBgkqhkiG9w0BCQcxCwwJc2VjcmV0MTIzMCYGCSqGSIb3DQEJDjEZMBcwFQYDVR0RBA4wDIIKY3AuZXhhbXBsZTAKBggqhkjOPQQDAgNIADBFAiBu9Hrd2mE3L0wrQXdpS9UL077LTe/fTqjsvR2B8xSa/QIhAJS3obNWO2+ykNDsdwBaAtvb2IHhpHbYM0ZNPy83uJ0Q',
  'P-384':
    'MIIBLjCBtQIBADAPMQ0wCwYDVQQDDARwMzg0MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE93y/8gt3RDF6qG78Pc1bVzvJ8P7FeJJnz/bODlET0S6nMYGn5ylN4MNDyFKHFEzj2lpbXqMtwLLHOhI/0U57w69RBRC7sgJz2JzkZtDjOIfVwDWtNjg87suT9uNLRJw0oCcwJQYJKoZIhvcNAQkOMRgwFjAUBgNVHREEDTALgglwLmV4YW1wbGUwCgYIKoZIzj0EAwMDaAAwZQIwfTe5b2duhCWhIMEb7RAFFwQEW0r/pRr9/2WtkzGlo3TxviaorkP33ggP0+ZtDozeAjEA4R2RuObcGHnqNCWsLi5rPw9LjRUrNz6cq53RwpVgWt0ygHhHJEMR1y8xsqsWc1dd',
  RSA: 'MIIBXDCBxgIBADAdMQ0wCwYDVQQKDARBY21lMQwwCgYDVQQDDANyc2EwgZ8wDQYJKoZIhvcNAQEBBQADgY0AMIGJAoGBAKhgEVKV1gqeHTbzMDazgFGUGOkeS94dgEeKfnJRzbrgAeHcmdqLNCJOX1+I30nTckKZEKmrNT58ZtKau7xBpv5aMtYKH+rJ0eemYKp8XYzafezzUJc+zNvyhTRpBOfjtriU8RAxcI9i2QQ+BwddZmgOBrNYBNLsOS6I0WWAsasLAgMBAAGgADANBgkqhkiG9w0BAQsFAAOBgQAUetsirhEMOEUf+g4PMXL3UDLOZENm8nA3/NfA+UeXTo4W8iSIiYwY7NJzZ9t/VV4bwxpDb7CV3wUCcnPMfP460XdVU4E0bkhKLDmMS7m6/Im0gmwzEH1gU5JWj5z8lEAxnd79FSEWvmE2WW9lzEi+rJz5sl+XMOLqSqq55ntPww==',
};

const SEED = 0x6b_66_31_32;
const MUTATIONS_PER_SAMPLE = 4_000;

/** mulberry32: a small seeded generator, so a failure names a reproducible mutation. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One mutation of `der`: 1–3 bit flips, a truncation, or inserted or removed bytes. */
function mutate(der: Uint8Array, next: () => number): { bytes: Uint8Array; how: string } {
  const at = (n: number): number => Math.floor(next() * n);
  const kind = at(10);
  if (kind < 6) {
    const bytes = der.slice();
    const flips = 1 + at(3);
    const where: number[] = [];
    for (let i = 0; i < flips; i++) {
      const bit = at(der.length * 8);
      where.push(bit);
      bytes[bit >> 3]! ^= 1 << (bit & 7);
    }
    return { bytes, how: `flip bits ${where.join(',')}` };
  }
  if (kind === 6) {
    const length = at(der.length);
    return { bytes: der.slice(0, length), how: `truncate to ${length}` };
  }
  const position = at(der.length + 1);
  const count = 1 + at(4);
  if (kind < 9) {
    const inserted = Array.from({ length: count }, () => at(256));
    const bytes = Uint8Array.from([...der.subarray(0, position), ...inserted, ...der.subarray(position)]);
    return { bytes, how: `insert ${inserted.join(',')} at ${position}` };
  }
  const bytes = Uint8Array.from([...der.subarray(0, position), ...der.subarray(position + count)]);
  return { bytes, how: `remove ${count} at ${position}` };
}

type Answer = { ok: true; csr: ParsedCsr } | { ok: false; error: string };

function answer(read: (der: Uint8Array) => ParsedCsr, der: Uint8Array): Answer {
  try {
    return { ok: true, csr: read(der) };
  } catch (error) {
    return { ok: false, error: (error as Error).message };
  }
}

/** What both readers must agree on when both accept. */
function essentials(csr: ParsedCsr): unknown {
  return {
    subject: csr.subject.text,
    subjectDer: Buffer.from(csr.subject.der).toString('hex'),
    attributes: csr.subject.attributes,
    spki: Buffer.from(csr.publicKeySpki).toString('hex'),
    keyAlgorithm: csr.keyAlgorithm,
    dnsNames: csr.dnsNames,
    signatureAlgorithm: csr.signatureAlgorithm,
  };
}

describe('the fast CSR reader and the strict ASN.1-library reader give the same answers', () => {
  it.each(Object.entries(SAMPLES))('%s: both accept the original', (_name, b64) => {
    const der = Uint8Array.from(Buffer.from(b64, 'base64'));
    expect(essentials(parseCsr(der))).toEqual(essentials(parseCsrReference(der)));
  });

  it(`on ${MUTATIONS_PER_SAMPLE} seeded mutations of each sample`, () => {
    const next = random(SEED);
    const differences: string[] = [];
    let accepted = 0;
    let total = 0;
    for (const [name, b64] of Object.entries(SAMPLES)) {
      const der = Uint8Array.from(Buffer.from(b64, 'base64'));
      for (let i = 0; i < MUTATIONS_PER_SAMPLE; i++) {
        const { bytes, how } = mutate(der, next);
        total++;
        const fast = answer(parseCsr, bytes);
        const reference = answer(parseCsrReference, bytes);
        if (fast.ok !== reference.ok) {
          const why = fast.ok
            ? `reference: ${(reference as { error: string }).error}`
            : `fast: ${(fast as { error: string }).error}`;
          differences.push(`${name}, ${how}: fast ${fast.ok ? 'accepts' : 'refuses'}, ${why}`);
        } else if (fast.ok && reference.ok) {
          accepted++;
          const a = JSON.stringify(essentials(fast.csr));
          const b = JSON.stringify(essentials(reference.csr));
          if (a !== b) differences.push(`${name}, ${how}: both accept, fields differ\n  ${a}\n  ${b}`);
        }
      }
    }
    expect(total).toBeGreaterThanOrEqual(20_000);
    // Some mutations (a flipped bit in a key or signature) stay valid requests; both readers take them.
    expect(accepted).toBeGreaterThan(0);
    expect(differences.slice(0, 40)).toEqual([]);
    expect(differences.length).toBe(0);
  });
});

/** `sample` with the bytes `from` (hex, found once) replaced by `to`. */
function edited(sample: string, from: string, to: string): Uint8Array {
  const der = Buffer.from(SAMPLES[sample]!, 'base64');
  const at = der.indexOf(Buffer.from(from, 'hex'));
  expect(at).toBeGreaterThan(0);
  expect(der.indexOf(Buffer.from(from, 'hex'), at + 1)).toBe(-1);
  return Uint8Array.from([
    ...der.subarray(0, at),
    ...Buffer.from(to, 'hex'),
    ...der.subarray(at + from.length / 2),
  ]);
}

/** Both readers refuse `der`; returns the fast reader's csr_invalid message. */
function bothRefuse(der: Uint8Array): string {
  expect(() => parseCsrReference(der)).toThrow();
  try {
    parseCsr(der);
  } catch (error) {
    expect(error).toBeInstanceOf(KeyferryError);
    expect((error as KeyferryError).code).toBe('csr_invalid');
    return (error as Error).message;
  }
  throw new Error('the fast reader accepted it');
}

describe('inputs the fast reader once accepted and the strict reference refuses', () => {
  // SAN extnValue: SEQUENCE { [2] "d1.example" }; other GeneralName forms go to the library.
  it.each(['80', '83', '8a', 'a2', '02'])('a GeneralName with tag 0x%s in place of dNSName', (tag) => {
    expect(bothRefuse(edited('P-256, SAN', '300c820a', `300c${tag}0a`))).toMatch(
      /^CSR content is malformed: /,
    );
  });

  it('an attribute type that is no OID (last byte with the high bit set)', () => {
    // challengePassword 1.2.840.113549.1.9.7 with its last byte 0x07 turned into 0x87.
    const der = edited('P-256, challengePassword', '06092a864886f70d010907', '06092a864886f70d010987');
    expect(bothRefuse(der)).toMatch(/truncated OID/);
  });

  it('a public key whose AlgorithmIdentifier tag is 0xb0', () => {
    // P-384 SPKI: SEQUENCE { SEQUENCE { id-ecPublicKey, secp384r1 }, BIT STRING }.
    const der = edited('P-384', '301006072a8648ce3d0201', 'b01006072a8648ce3d0201');
    expect(bothRefuse(der)).toMatch(/^CSR content is malformed: /);
  });

  it('a public key BIT STRING with unused bits', () => {
    const der = edited('P-384', '0362000', '0362010');
    expect(bothRefuse(der)).toMatch(/^CSR content is malformed: the public key/);
  });

  it('a subject UTF8String that is not UTF-8', () => {
    const der = edited('P-256, SAN', '0c0441636d65', '0c0441ff6d65'); // "Acme" → "A\xffme"
    expect(bothRefuse(der)).toMatch(/not valid UTF-8/);
  });

  it('a subject UniversalString that is not UCS-4 (library fallback, re-encoded differently)', () => {
    const der = edited('P-256, SAN', '0c0441636d65', '1c0441636d65'); // 0x41636d65 is no code point
    expect(bothRefuse(der)).toMatch(/subject is not DER|not a PKCS#10/);
  });
});

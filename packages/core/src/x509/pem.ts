import { type ErrorCode, KeyferryError } from '../errors.ts';
import { u8 } from './der.ts';

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;
const BASE64_BODY = /^[A-Za-z0-9+/=\s]*$/;
// Old openssl and Windows tools still write this label for a CSR.
const ALIASES: Record<string, string> = { 'NEW CERTIFICATE REQUEST': 'CERTIFICATE REQUEST' };

/** One PEM block found in a text. */
export interface PemBlock {
  readonly label: string;
  readonly der: Uint8Array;
}

/** PEM text for `der`: 64-column base64 between BEGIN/END lines, ending with a newline. */
export function toPem(der: Uint8Array, label: string): string {
  if (!/^[A-Z0-9 ]+$/.test(label)) throw new TypeError(`invalid PEM label ${JSON.stringify(label)}`);
  const body = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < body.length; i += 64) lines.push(body.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/**
 * The DER of the first PEM block in `text` (of the given label, when one is named). Tolerates
 * CRLF line ends and text around the block; refuses encrypted or otherwise headed blocks.
 */
export function fromPem(text: string, label?: string): Uint8Array {
  const blocks = pemBlocks(text, label);
  const wanted = label === undefined ? blocks[0] : blocks.find((block) => block.label === canonical(label));
  if (wanted === undefined) {
    const found = blocks.map((block) => block.label).join(', ');
    const what = label === undefined ? 'a PEM block' : `a PEM block labelled ${label}`;
    throw new KeyferryError(codeFor(label), `expected ${what}, found ${found === '' ? 'none' : found}`);
  }
  return wanted.der;
}

/** The DER of every CERTIFICATE block in `text`, in order; other blocks are skipped. */
export function splitPemBundle(text: string): Uint8Array[] {
  return pemBlocks(text, 'CERTIFICATE')
    .filter((block) => block.label === 'CERTIFICATE')
    .map((block) => block.der);
}

/** Every PEM block in `text`, in order. */
export function pemBlocks(text: string, labelForErrors?: string): PemBlock[] {
  if (typeof text !== 'string') throw new TypeError('PEM input must be a string');
  const out: PemBlock[] = [];
  for (const match of text.matchAll(BLOCK)) {
    const [, begin = '', body = '', end = ''] = match;
    const code = codeFor(labelForErrors ?? begin);
    if (begin !== end) throw new KeyferryError(code, `PEM block BEGIN ${begin} ends with END ${end}`);
    if (body.includes(':'))
      throw new KeyferryError(code, `PEM block ${begin} has headers (encrypted?); not supported`);
    if (!BASE64_BODY.test(body))
      throw new KeyferryError(code, `PEM block ${begin} has characters outside base64`);
    const der = u8(Buffer.from(body.replace(/\s+/g, ''), 'base64'));
    if (der.length === 0) throw new KeyferryError(code, `PEM block ${begin} is empty`);
    out.push({ label: canonical(begin), der });
  }
  return out;
}

function canonical(label: string): string {
  return ALIASES[label] ?? label;
}

function codeFor(label: string | undefined): ErrorCode {
  if (label === undefined) return 'invalid_request';
  const name = canonical(label);
  if (name === 'CERTIFICATE REQUEST') return 'csr_invalid';
  if (name === 'CERTIFICATE' || name === 'X509 CRL') return 'certificate_invalid';
  return 'invalid_request';
}

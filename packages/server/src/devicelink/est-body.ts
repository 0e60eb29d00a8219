import type { IncomingHttpHeaders } from 'node:http';
import { KeyferryError } from '@keyferry/core';

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
/** What a base64 body may hold besides the alphabet: padding, line breaks, PEM armour. */
const BASE64_TEXT = /^[A-Za-z0-9+/=\s-]*$/;
const PEM_ARMOR = /-----(BEGIN|END) (NEW )?CERTIFICATE REQUEST-----/g;
const DER_SEQUENCE = 0x30;

/** Refuses anything but `application/pkcs10`. */
export function checkCsrHeaders(headers: IncomingHttpHeaders): void {
  const type = (headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/pkcs10') {
    throw new KeyferryError(
      'unsupported_media_type',
      `Content-Type ${JSON.stringify(headers['content-type'] ?? '')} is not accepted: send the CSR as application/pkcs10 (base64 of the DER)`,
    );
  }
}

/**
 * The DER of an EST CSR body: base64 (RFC 7030 §4.2.1), line breaks allowed; PEM armour is
 * tolerated. Content-Transfer-Encoding is not consulted: RFC 8951 makes the body base64
 * whatever that header says (clients disagree about sending it). Binary DER is refused with
 * a message saying to encode it.
 */
export function decodeCsrBody(body: Buffer): Uint8Array {
  if (body.length === 0)
    throw new KeyferryError('csr_invalid', 'the request body is empty: send the base64 DER CSR');
  const latin1 = body.toString('latin1');
  // base64 of a DER SEQUENCE starts with 'M'; a body starting with the SEQUENCE byte itself
  // and holding bytes base64 never has is the DER sent as is
  if (body[0] === DER_SEQUENCE && !BASE64_TEXT.test(latin1)) {
    throw new KeyferryError(
      'csr_invalid',
      'the body is binary DER; EST takes the CSR base64-encoded whatever Content-Transfer-Encoding says (RFC 8951): send the base64 of the DER',
    );
  }
  const text = latin1.replace(PEM_ARMOR, '').replace(/[\s]+/g, '');
  if (!BASE64.test(text) || text.length % 4 === 1) {
    throw new KeyferryError(
      'csr_invalid',
      'the body is not base64: EST takes the DER CSR base64-encoded (RFC 7030 §4.2.1, RFC 8951)',
    );
  }
  return new Uint8Array(Buffer.from(text, 'base64'));
}

import type { IncomingHttpHeaders } from 'node:http';
import { KeyferryError } from '@keyferry/core';

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const PEM_ARMOR = /-----(BEGIN|END) (NEW )?CERTIFICATE REQUEST-----/g;

/** Refuses anything but `application/pkcs10` with base64 (or no) Content-Transfer-Encoding. */
export function checkCsrHeaders(headers: IncomingHttpHeaders): void {
  const type = (headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/pkcs10') {
    throw new KeyferryError(
      'unsupported_media_type',
      `Content-Type ${JSON.stringify(headers['content-type'] ?? '')} is not accepted: send the CSR as application/pkcs10 (base64 of the DER)`,
    );
  }
  const raw = headers['content-transfer-encoding'];
  const encoding = Array.isArray(raw) ? raw.join(',') : raw;
  if (encoding !== undefined && encoding.trim().toLowerCase() !== 'base64') {
    throw new KeyferryError(
      'unsupported_media_type',
      `Content-Transfer-Encoding ${JSON.stringify(encoding)} is not accepted: send the DER CSR base64-encoded (Content-Transfer-Encoding: base64)`,
    );
  }
}

/**
 * The DER of an EST CSR body: base64 (RFC 7030 §4.2.1), line breaks allowed; PEM armour is
 * tolerated. Binary DER is refused with a message saying to encode it.
 */
export function decodeCsrBody(body: Buffer): Uint8Array {
  if (body.length === 0)
    throw new KeyferryError('csr_invalid', 'the request body is empty: send the base64 DER CSR');
  if (body[0] === 0x30 && body.length > 1 && body[1]! >= 0x80) {
    throw new KeyferryError(
      'csr_invalid',
      'the body is binary DER; EST takes the CSR base64-encoded (Content-Transfer-Encoding: base64)',
    );
  }
  const text = body.toString('latin1').replace(PEM_ARMOR, '').replace(/[\s]+/g, '');
  if (!BASE64.test(text) || text.length % 4 === 1) {
    throw new KeyferryError(
      'csr_invalid',
      'the body is not base64: EST takes the DER CSR base64-encoded (Content-Transfer-Encoding: base64)',
    );
  }
  return new Uint8Array(Buffer.from(text, 'base64'));
}

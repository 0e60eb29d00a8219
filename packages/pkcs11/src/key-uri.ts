/** What names a private key in a token for OpenSSL's PKCS#11 engine. */
export interface EngineKeyUriOptions {
  readonly tokenLabel: string;
  /** CKA_LABEL of the private key; give this, `objectId`, or both. */
  readonly objectLabel?: string;
  /** CKA_ID of the private key. */
  readonly objectId?: Uint8Array;
  /** The user PIN; without it the engine asks for one, which a daemon cannot answer. */
  readonly pin?: string;
}

/**
 * Everything but RFC 3986 unreserved characters is percent-encoded: always valid in both
 * the path and the query of an RFC 7512 URI, and it keeps `;`, `?`, `&` and `%` in a label
 * or PIN from being read as separators.
 */
function encode(value: string | Uint8Array): string {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  let out = '';
  for (const byte of bytes) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9\-._~]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * An RFC 7512 PKCS#11 URI for a private key, for `openssl -engine pkcs11 -keyform engine`
 * and Node's `privateKeyIdentifier`: `pkcs11:token=aktualizr;object=SE_83000042;type=private?pin-value=87654321`.
 * The PIN goes in the query, where RFC 7512 puts it; libp11 reads it there too.
 */
export function opensslEngineKeyUri(options: EngineKeyUriOptions): string {
  if (options.objectLabel === undefined && options.objectId === undefined) {
    throw new TypeError('name the key by objectLabel, objectId or both');
  }
  const path = [`token=${encode(options.tokenLabel)}`];
  if (options.objectLabel !== undefined) path.push(`object=${encode(options.objectLabel)}`);
  if (options.objectId !== undefined) {
    // An id is binary: every byte is written %XX, even those that would read as text.
    path.push(
      `id=${[...options.objectId].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join('')}`,
    );
  }
  path.push('type=private');
  const query = options.pin === undefined ? '' : `?pin-value=${encode(options.pin)}`;
  return `pkcs11:${path.join(';')}${query}`;
}

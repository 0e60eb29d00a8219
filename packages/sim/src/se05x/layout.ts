/**
 * How a simulated SE05x is laid out, on a PKCS#11 token and in a soft directory. The agent
 * reads the same names (packages/sim/README.md documents them for device makers).
 */
export const SE_TOKEN = { label: 'aktualizr', userPin: '87654321', soPin: '12345678' } as const;

/** PKCS#11 label of SE object `id` (8 hex digits): `SE_<8 lowercase hex>`. */
export function objectLabel(objectId: string): string {
  return `SE_${objectId.toLowerCase()}`;
}

export const SE_LAYOUT = {
  uidObjectId: '7fff0206',
  identityKeyObjectId: 'f0000000',
  identityCertObjectId: 'f0000001',
  /** Token: CKO_DATA holding the 18 UID bytes. */
  uidLabel: objectLabel('7fff0206'),
  identityKeyLabel: objectLabel('f0000000'),
  identityCertLabel: objectLabel('f0000001'),
  /** Soft directory: `uid` holds the UID as 36 lowercase hex digits and a newline. */
  uidFile: 'uid',
  /** Soft directory: a key object is `SE_<id>.key.pem` (PKCS#8 PEM, unencrypted, 0600). */
  keyFile: (objectId: string) => `${objectLabel(objectId)}.key.pem`,
  /** Soft directory: a certificate object is `SE_<id>.pem` (PEM, 0600). */
  certFile: (objectId: string) => `${objectLabel(objectId)}.pem`,
} as const;

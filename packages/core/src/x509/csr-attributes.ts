import { encodeTlv, oidBytes, TAG } from './der.ts';
import { OID } from './oids.ts';

/**
 * The CSR attributes every device certificate object wants (RFC 7030 §4.5.2), as the DER of
 * CsrAttrs: a key of type id-ecPublicKey on secp256r1 (an Attribute, as the RFC's example
 * names a curve) and a signature with ecdsa-with-SHA256 (a bare OID). It is what the issuance
 * accepts, so an EST client that reads `csrattrs` makes a CSR that is not refused.
 */
export function deviceCsrAttributes(): Uint8Array {
  return encodeTlv(
    TAG.SEQUENCE,
    encodeTlv(TAG.SEQUENCE, oidBytes(OID.ecPublicKey), encodeTlv(TAG.SET, oidBytes(OID.secp256r1))),
    oidBytes(OID.ecdsaWithSha256),
  );
}

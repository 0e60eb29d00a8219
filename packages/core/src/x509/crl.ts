import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  AuthorityKeyIdentifier,
  CRLNumber,
  CRLReason,
  CRLReasons,
  Extension,
  KeyIdentifier,
  RevokedCertificate,
  TBSCertList,
  Version,
} from '@peculiar/asn1-x509';
import { u8 } from './der.ts';
import { issuerFromCertificate } from './issue.ts';
import { nameFromDer } from './name.ts';
import { OID } from './oids.ts';
import { keyIdentifier, publicKeysEqual } from './public-key.ts';
import { serialContent, serialFromHex } from './serial.ts';
import { ECDSA_WITH_SHA256, signedStructure } from './signature.ts';
import type { Signer } from './signer.ts';
import { certificateTime } from './validity.ts';

/** A revocation reason (RFC 5280 §5.3.1). */
export type RevocationReason = keyof typeof CRLReasons;

/** One revoked certificate. */
export interface RevokedEntry {
  readonly serialHex: string;
  readonly revokedAt: Date;
  readonly reason?: RevocationReason;
}

/** Options of {@link buildCrl}. */
export interface BuildCrlOptions {
  readonly issuerCert: Uint8Array;
  readonly signer: Signer;
  readonly revoked: readonly RevokedEntry[];
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
  /** Monotonic CRL number (RFC 5280 §5.2.3); a non-negative safe integer. */
  readonly crlNumber: number;
}

/** A v2 CRL (DER) signed with ecdsa-with-SHA256, with AKI and CRL number extensions. */
export async function buildCrl(options: BuildCrlOptions): Promise<Uint8Array> {
  const issuer = issuerFromCertificate(options.issuerCert);
  if (!publicKeysEqual(options.signer.publicKeySpki, issuer.publicKeySpki)) {
    throw new TypeError("the signer's key is not the issuer's key");
  }
  if (!Number.isSafeInteger(options.crlNumber) || options.crlNumber < 0) {
    throw new TypeError('crlNumber must be a non-negative safe integer');
  }
  if (!(options.nextUpdate.getTime() > options.thisUpdate.getTime())) {
    throw new TypeError('nextUpdate must be after thisUpdate');
  }
  const keyId = issuer.keyIdentifier ?? keyIdentifier(issuer.publicKeySpki);
  const tbs = new TBSCertList({
    version: Version.v2,
    signature: ECDSA_WITH_SHA256,
    issuer: nameFromDer(issuer.name),
    thisUpdate: certificateTime(options.thisUpdate),
    nextUpdate: certificateTime(options.nextUpdate),
    crlExtensions: [
      extension(
        OID.authorityKeyIdentifier,
        new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(keyId) }),
      ),
      extension(OID.crlNumber, new CRLNumber(options.crlNumber)),
    ],
  });
  // RFC 5280 §5.1.2.6: with no revoked certificate the list is absent, not empty.
  if (options.revoked.length > 0) {
    tbs.revokedCertificates = options.revoked.map((entry) => {
      const revoked = new RevokedCertificate({
        userCertificate: serialContent(serialFromHex(entry.serialHex)).slice().buffer,
        revocationDate: certificateTime(entry.revokedAt),
      });
      if (entry.reason !== undefined) {
        const code = CRLReasons[entry.reason];
        if (code === undefined)
          throw new TypeError(`unknown revocation reason ${JSON.stringify(entry.reason)}`);
        revoked.crlEntryExtensions = [extension(OID.crlReason, new CRLReason(code))];
      }
      return revoked;
    });
  }
  const tbsDer = u8(AsnConvert.serialize(tbs));
  return signedStructure(tbsDer, await options.signer.sign(tbsDer));
}

function extension(oid: string, value: unknown): Extension {
  return new Extension({ extnID: oid, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

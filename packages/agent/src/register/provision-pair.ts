import { createCsr, parseCertificate, publicKeysEqual, type Signer, sha256 } from '@keyferry/core';
import { AgentError } from '../agent-error.ts';
import type { DeviceLinkClient } from '../device-link/client.ts';
import type { AssignedPair } from '../device-link/manifest.ts';
import type { Log } from '../log.ts';
import { hexId, isReservedObjectId, type SecureElement, seLabel } from '../se/port.ts';
import { crashPoint } from './crash-point.ts';

export const PROVISIONED = 'PROVISIONING_COMPLETED';

/** What happened to one pair: whether anything in the SE changed and whether to report it. */
export interface PairOutcome {
  readonly pair: AssignedPair;
  readonly generated: boolean;
  readonly enrolled: boolean;
  readonly needsReport: boolean;
}

/** A Signer over the key at `objectId`: SHA-256 in Node, the signature in the SE. */
export function seSigner(se: SecureElement, objectId: number, publicKeySpki: Uint8Array): Signer {
  return { publicKeySpki, sign: async (data) => se.sign(objectId, sha256(data)) };
}

/**
 * Brings one KEYPAIR + CERTIFICATE pair to "provisioned", doing only what is missing, so a
 * rerun after a crash between any two steps converges:
 * key absent → generate it in the SE; certificate absent, expired, for another key or not
 * the service's live one (the manifest's `certificateSerial`) → CSR
 * signed in the SE, enroll (the service returns the same certificate for the same key, so
 * a lost answer costs no second certificate), store it. Nothing is regenerated that exists.
 */
export async function provisionPair(options: {
  readonly pair: AssignedPair;
  readonly se: SecureElement;
  readonly client: DeviceLinkClient;
  readonly uidHex: string;
  readonly log: Log;
  readonly now: () => Date;
}): Promise<PairOutcome> {
  const { pair, se, client, log } = options;
  const keyId = pair.key.objectId;
  const certId = pair.certificate.objectId;
  for (const object of [pair.key, pair.certificate]) {
    if (isReservedObjectId(object.objectId)) {
      throw new AgentError(
        'se_foreign_key',
        `the manifest assigns ${object.name} to ${hexId(object.objectId)}, which holds the secure element's vendor identity; ` +
          'fix the secure object ids of the factory',
      );
    }
  }
  let spki = se.publicKey(keyId);
  let generated = false;
  if (spki === undefined) {
    spki = se.generateKeyPair(keyId);
    generated = true;
    log.info(`${pair.key.name}: generated key ${seLabel(keyId)} in the secure element`);
    crashPoint('after-keygen');
  } else {
    log.info(`${pair.key.name}: key ${seLabel(keyId)} already in the secure element, kept`);
  }

  const stored = se.getCertificate(certId);
  const usable = stored && usableFor(stored, spki, options.now());
  // The service names its live certificate: one it no longer holds (revoked when the device
  // was deleted from the allow-list, or replaced) is useless at the gateway, however valid.
  const live = pair.certificate.certificateSerial;
  const current = usable && (live === undefined || live === usable) ? usable : undefined;
  if (current) {
    log.info(
      `${pair.certificate.name}: certificate ${seLabel(certId)} already stored (serial ${current}), kept`,
    );
  } else {
    if (usable)
      log.info(
        `${pair.certificate.name}: stored certificate (serial ${usable}) is not the service's live one (${live ?? 'none: revoked'}); enrolling again`,
      );
    else if (stored)
      log.info(`${pair.certificate.name}: stored certificate is expired or for another key; enrolling again`);
    const csr = await createCsr({ subject: { CN: options.uidHex }, signer: seSigner(se, keyId, spki) });
    const certs = await client.simpleEnroll(pair.certificate.name, csr);
    const issued = certs.find((der) => publicKeysEqual(parseCertificate(der).spki, spki));
    if (!issued) {
      throw new AgentError(
        'refused',
        `${pair.certificate.name}: the service answered the enrollment with no certificate for key ${seLabel(keyId)}`,
      );
    }
    const parsed = parseCertificate(issued);
    log.info(
      `${pair.certificate.name}: enrolled, certificate serial ${parsed.serialHex} from ${parsed.issuer.text}`,
    );
    crashPoint('after-enroll');
    se.putCertificate(certId, issued);
    log.info(`${pair.certificate.name}: stored certificate as ${seLabel(certId)}`);
    crashPoint('after-store');
  }
  const enrolled = !current;
  const needsReport =
    generated || enrolled || pair.key.state !== PROVISIONED || pair.certificate.state !== PROVISIONED;
  return { pair, generated, enrolled, needsReport };
}

/** The stored certificate's serial when it certifies `spki` and is valid now, else undefined. */
function usableFor(der: Uint8Array, spki: Uint8Array, now: Date): string | undefined {
  try {
    const cert = parseCertificate(der);
    if (!publicKeysEqual(cert.spki, spki)) return undefined;
    if (cert.notAfter <= now) return undefined;
    return cert.serialHex;
  } catch {
    return undefined;
  }
}

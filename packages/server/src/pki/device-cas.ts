import {
  fromPem,
  KeyferryError,
  type ParsedCertificate,
  parseCertificate,
  parseCsr,
  publicKeysEqual,
  serialToDecimal,
  toPem,
} from '@keyferry/core';
import type { Db } from '../storage/database.ts';

/** A device CA whose key the service holds: an EL2GO intermediate or an online CA. */
export interface ServiceHeldCa {
  what: string;
  cert: ParsedCertificate;
}

/** The device CAs the service signs with, so a ca-crt PATCH cannot drop them unnoticed. */
export async function serviceHeldCas(db: Db, factoryId: number): Promise<ServiceHeldCa[]> {
  const intermediates = await db
    .selectFrom('intermediate_cas')
    .select(['name', 'certificate'])
    .where('factory_id', '=', factoryId)
    .execute();
  const online = await db
    .selectFrom('online_cas')
    .select(['id', 'certificate'])
    .where('factory_id', '=', factoryId)
    .where('certificate', 'is not', null)
    .execute();
  return [
    ...intermediates.map((ca) => ({
      what: `intermediate CA ${ca.name}`,
      cert: parseCertificate(fromPem(ca.certificate, 'CERTIFICATE')),
    })),
    ...online.map((ca) => ({
      what: `online device CA ${ca.id}`,
      cert: parseCertificate(fromPem(ca.certificate!, 'CERTIFICATE')),
    })),
  ];
}

/**
 * Refuses a new ca-crt that would silently take trust away: an empty bundle while device CAs
 * are trusted, or one that leaves out a trusted CA the service holds the key of (devices holding
 * its certificates would be refused by the gateway). `remove-device-cas` is the operator saying
 * so; revoked CAs already left ca-crt on purpose.
 */
export async function assertNoSilentRemoval(
  db: Db,
  factoryId: number,
  current: readonly Uint8Array[],
  next: readonly Uint8Array[],
): Promise<void> {
  const within = (bundle: readonly Uint8Array[], der: Uint8Array) =>
    bundle.some((entry) => Buffer.from(entry).equals(der));
  if (next.length === 0 && current.length > 0) {
    throw new KeyferryError(
      'conflict',
      `ca-crt is empty: that would remove all ${current.length} device CA(s) and the gateway would refuse every device; send the full bundle (keyferry keys ca show --just-device-cas), or add "remove-device-cas": true (keyferry keys ca update --remove-device-cas) if you mean it`,
    );
  }
  // Only what is trusted now can be dropped: aws-iot-ca, say, is held but never in ca-crt.
  const dropped = (await serviceHeldCas(db, factoryId)).filter(
    (ca) => within(current, ca.cert.der) && !within(next, ca.cert.der),
  );
  if (dropped.length > 0) {
    const names = dropped.map((ca) => `${ca.what} (serial ${serialToDecimal(ca.cert.serialHex)})`).join(', ');
    throw new KeyferryError(
      'conflict',
      `ca-crt leaves out ${names}, whose key the service holds: devices with its certificates would be refused; keep it in the bundle, revoke it with keyferry keys ca revoke-device-ca, or add "remove-device-cas": true if you mean it`,
    );
  }
}

/**
 * Gives every open online CA request the certificate of its key found in `bundle` (the root's
 * answer to the ca-csr from POST certs/). Runs in the caller's transaction.
 */
export async function completeOnlineCas(
  db: Db,
  factoryId: number,
  bundle: readonly ParsedCertificate[],
  now: Date,
): Promise<number[]> {
  const open = await db
    .selectFrom('online_cas')
    .select(['id', 'csr'])
    .where('factory_id', '=', factoryId)
    .where('certificate', 'is', null)
    .execute();
  const completed: number[] = [];
  for (const request of open) {
    const key = parseCsr(fromPem(request.csr, 'CERTIFICATE REQUEST')).publicKeySpki;
    const cert = bundle.find((c) => publicKeysEqual(c.spki, key));
    if (!cert) continue;
    if (cert.pathLen !== 0) {
      throw new KeyferryError(
        'certificate_invalid',
        `the online CA certificate (serial ${serialToDecimal(cert.serialHex)}) must have pathlen 0: it signs device certificates only`,
      );
    }
    await db
      .updateTable('online_cas')
      .set({ certificate: toPem(cert.der, 'CERTIFICATE'), signed_at: now.toISOString() })
      .where('id', '=', request.id)
      .execute();
    completed.push(request.id);
  }
  return completed;
}

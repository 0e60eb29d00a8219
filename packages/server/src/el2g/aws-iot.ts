import { generateKeyPairSync } from 'node:crypto';
import {
  fromPem,
  INTERMEDIATE_CA_YEARS,
  issueCertificate,
  issuerFromCertificate,
  KeyferryError,
  LEAF_SERIAL_BITS,
  parseCertificate,
  randomSerial,
  selfSignedCa,
  softSigner,
  toPem,
  validityFor,
} from '@keyferry/core';
import type { Factory } from '../factories/factories.ts';
import {
  type CustodyKey,
  custodyKeyRow,
  custodySignerById,
  discardingKeysOnFailure,
  type KeyCustody,
} from '../keys/custody.ts';
import type { Db } from '../storage/database.ts';
import { ensureCredentialPair } from './credential-pair.ts';
import { listDeviceGroups } from './group-assignments.ts';
import { upsertIntermediateCa } from './intermediate-cas.ts';
import { audit, type ChangeContext, type SecureObject } from './secure-objects.ts';

/** Names and object ids of the AWS IoT credentials (as EdgeLock 2GO named them). */
export const AWS_IOT = {
  caName: 'aws-iot-ca',
  keypair: { name: 'aws-iot-ca-kp', objectId: '83000044' },
  certificate: { name: 'aws-iot-ca', objectId: '83000045' },
} as const;

/**
 * AWS registration codes are 64 hex digits; the verification certificate carries the code as
 * its CN, which X.509 bounds at 64 characters. Other characters are refused rather than escaped.
 */
export const REGISTRATION_CODE = /^[A-Za-z0-9._-]{1,64}$/;

/** How long the verification certificate is valid: it is used once, right away. */
export const VERIFICATION_CERT_DAYS = 30;

export interface AwsIotResult {
  /** The aws-iot-ca certificate, PEM (self-signed: the root of the devices' AWS chain). */
  ca: string;
  /** A fresh verification certificate: CN = the registration code, signed by the CA's key. */
  cert: string;
  /** False when the CA and objects already existed (a re-run). */
  created: boolean;
  objects: SecureObject[];
  assigned: number;
}

/**
 * POST el2g/aws-iot/: makes (once) the `aws-iot-ca` intermediate in custody and its two secure
 * objects in every device group, then signs a verification certificate for `registrationCode`.
 *
 * The CA is self-signed by its own custody key, as EdgeLock 2GO did: AWS IoT only needs the CA
 * certificate to register it, and the factory root is offline (the operator's PKI dir), so a
 * root-signed AWS CA would need the operator's key for a step the service must do alone. It is
 * also not added to the device gateway's `ca-crt`, so AWS credentials never open the OTA side.
 *
 * A refusal (quota, conflicting objects) leaves everything as it was; the quota is checked
 * before any key is generated.
 */
export async function configureAwsIot(
  db: Db,
  custody: KeyCustody,
  factory: Factory,
  registrationCode: string,
  change: ChangeContext,
  now = new Date(),
): Promise<AwsIotResult> {
  if (!REGISTRATION_CODE.test(registrationCode)) {
    throw new KeyferryError(
      'invalid_request',
      'registration-code must be 1-64 letters, digits, ".", "_" or "-" (aws iot get-registration-code prints 64 hex digits)',
    );
  }
  await checkQuota(db, factory.id);
  const existing = await findCa(db, factory.id);
  const apply = (using: KeyCustody, key: CustodyKey | undefined) =>
    applyAwsIot(db, using, factory, registrationCode, key, change, now);
  try {
    return await discardingKeysOnFailure(db, custody, async (using) =>
      apply(
        using,
        existing ? undefined : await using.generate(`intermediate-ca:${factory.name}:${AWS_IOT.caName}`),
      ),
    );
  } catch (error) {
    // Two first calls at once: the one that lost the race to create aws-iot-ca uses the winner's
    // (its own key, never stored, is off the token by now).
    if (!existing && !(error instanceof KeyferryError) && (await findCa(db, factory.id)))
      return apply(custody, undefined);
    throw error;
  }
}

function applyAwsIot(
  db: Db,
  custody: KeyCustody,
  factory: Factory,
  registrationCode: string,
  newKey: CustodyKey | undefined,
  change: ChangeContext,
  now: Date,
): Promise<AwsIotResult> {
  return db.transaction().execute(async (trx) => {
    let ca = await findCa(trx, factory.id);
    let created = false;
    if (!ca) {
      if (!newKey)
        throw new KeyferryError('conflict', 'aws-iot-ca disappeared meanwhile: send the request again');
      const row = custodyKeyRow(newKey, now);
      await trx.insertInto('custody_keys').values(row).execute();
      const signer = await custody.signer(row);
      const der = await selfSignedCa({
        subject: { OU: factory.name, CN: AWS_IOT.caName },
        signer,
        years: INTERMEDIATE_CA_YEARS,
        pathLen: 0,
        now,
      });
      const upserted = await upsertIntermediateCa(
        trx,
        factory.id,
        { name: AWS_IOT.caName, keyRef: newKey.id, certificatePem: toPem(der, 'CERTIFICATE') },
        change,
        now,
      );
      // Another first call committed aws-iot-ca after this transaction looked (PostgreSQL, read
      // committed): never replace it; roll back and let the caller reuse the winner's CA.
      if (!upserted.created) throw new Error('aws-iot-ca was created concurrently');
      created = true;
      ca = { id: upserted.ca.id, key_ref: newKey.id, certificate: upserted.ca.certificate };
    }
    const { keypair, certificate, assigned } = await ensureCredentialPair(
      trx,
      factory.id,
      AWS_IOT,
      ca.id,
      change,
      now,
    );
    const caDer = fromPem(ca.certificate, 'CERTIFICATE');
    const verification = await verificationCertificate(
      caDer,
      await custodySignerById(trx, custody, ca.key_ref),
      registrationCode,
      now,
    );
    await audit(
      trx,
      factory.id,
      change,
      'aws-iot.verification-certificate',
      `intermediate-ca:${AWS_IOT.caName}`,
      { registrationCode, serial: parseCertificate(verification).serialHex, caCreated: created },
      now,
    );
    return {
      ca: ca.certificate,
      cert: toPem(verification, 'CERTIFICATE'),
      created,
      objects: [keypair, certificate],
      assigned,
    };
  });
}

async function findCa(db: Db, factoryId: number) {
  return db
    .selectFrom('intermediate_cas')
    .select(['id', 'key_ref', 'certificate'])
    .where('factory_id', '=', factoryId)
    .where('name', '=', AWS_IOT.caName)
    .executeTakeFirst();
}

/**
 * The verification certificate AWS's DEFAULT mode asks for: a leaf whose CN is the registration
 * code, signed by the CA's key. Its own key is throwaway; AWS checks only the signature and CN.
 */
async function verificationCertificate(
  caDer: Uint8Array,
  caSigner: Parameters<typeof issueCertificate>[0]['signer'],
  registrationCode: string,
  now: Date,
): Promise<Uint8Array> {
  const subjectKey = softSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
  return issueCertificate({
    issuer: issuerFromCertificate(caDer),
    subject: { CN: registrationCode },
    subjectPublicKeySpki: subjectKey.publicKeySpki,
    serial: randomSerial(LEAF_SERIAL_BITS),
    ...validityFor(now, { days: VERIFICATION_CERT_DAYS }),
    extensions: { basicConstraints: { ca: false }, keyUsage: ['digitalSignature'] },
    signer: caSigner,
  });
}

/**
 * Every device of a group holds all the group's objects, so each group needs room for one more
 * key pair and one more certificate (unless it already holds the AWS ones). The refusal names
 * what already uses the plan's slots, so the operator knows what to unassign.
 */
async function checkQuota(db: Db, factoryId: number): Promise<void> {
  const plan = await db
    .selectFrom('factory_el2g')
    .select(['max_keypairs', 'max_certificates'])
    .where('factory_id', '=', factoryId)
    .executeTakeFirst();
  if (!plan) throw new KeyferryError('internal', `factory ${factoryId} has no EdgeLock 2GO plan row`);
  const rows = await db
    .selectFrom('group_objects')
    .innerJoin('secure_objects', 'secure_objects.id', 'group_objects.secure_object_id')
    .innerJoin('device_groups', 'device_groups.id', 'group_objects.group_id')
    .select(['device_groups.name as group', 'secure_objects.name', 'secure_objects.type'])
    .where('device_groups.factory_id', '=', factoryId)
    .orderBy('device_groups.id')
    .orderBy('secure_objects.name')
    .execute();
  for (const { name: group } of await listDeviceGroups(db, factoryId)) {
    const held = rows.filter((r) => r.group === group);
    for (const [type, ours, max, limit, word] of [
      ['KEYPAIR', AWS_IOT.keypair.name, plan.max_keypairs, 'max_keypairs', 'key pairs'],
      ['CERTIFICATE', AWS_IOT.certificate.name, plan.max_certificates, 'max_certificates', 'certificates'],
    ] as const) {
      const same = held.filter((o) => o.type === type);
      if (same.some((o) => o.name === ours)) continue;
      if (same.length + 1 > max) {
        throw new KeyferryError(
          'object_quota_exceeded',
          `device group ${group} already holds ${same.length} of the plan's ${max} ${word} per device (${same.map((o) => o.name).join(', ')}); AWS IoT needs one more: unassign one of them or raise the plan (${limit})`,
          { detail: { group, limit, usage: same.length, max, held: same.map((o) => o.name) } },
        );
      }
    }
  }
}

import { createHash } from 'node:crypto';
import {
  fromPem,
  isKeyferryError,
  issueDeviceCertificate,
  KeyferryError,
  type ParsedCsr,
  parseAndVerifyCsr,
  toPem,
} from '@keyferry/core';
import { noPlanRow } from '../allowlist/plan.ts';
import type { AuditEntry } from '../audit/audit-log.ts';
import { retryAfterSeconds } from '../http/rate-limit.ts';
import type { CrlRefresher, RefreshDeps } from '../revocation/refresh.ts';
import { compiledOnce } from '../storage/compiled-query.ts';
import { asOneWrite, type Db, readThenWrite } from '../storage/database.ts';
import {
  type AssignedObject,
  EnrollmentRaced,
  type EnrollmentWrite,
  type IssuedCertificate,
  notAllowListed,
  recordDeviceStatesAlone,
  setObjectState,
  touchDevice,
} from './device-records.ts';
import type { IssuingCas } from './issuing-cas.ts';
import { assertPlanAllowsEnrollment, enrollmentFacts } from './plan-gate.ts';
import { firstValidity, renewalPolicy } from './renewal-policy.ts';
import type { DeviceSession } from './session.ts';
import { revokeAsSuperseded, type SupersededCertificate } from './supersede.ts';

export type EnrollMode = 'simpleenroll' | 'simplereenroll';

export interface Enrollment {
  certificate: Uint8Array;
  /** True when the same key was enrolled before and its certificate is returned again. */
  reused: boolean;
}

export interface IssuanceDeps extends RefreshDeps {
  issuingCas: IssuingCas;
  crlRefresher: CrlRefresher;
}

/** The CERTIFICATE object `label` of the device's group, or `unknown_label`. */
export function certificateObject(objects: readonly AssignedObject[], label: string): AssignedObject {
  const object = objects.find((o) => o.type === 'CERTIFICATE' && o.name === label);
  if (!object) {
    const names = objects.filter((o) => o.type === 'CERTIFICATE').map((o) => o.name);
    throw new KeyferryError(
      'unknown_label',
      `no certificate object ${JSON.stringify(label)} is assigned to this device; assigned: ${names.join(', ') || 'none'}`,
    );
  }
  return object;
}

/**
 * Issues (or returns again) the device certificate for one CERTIFICATE object (docs/device-link.md):
 * the CSR proves the device holds a P-256 key; the subject comes from the service. For
 * `simpleenroll` the same key gets the same certificate (renewals issued after it and not yet
 * reported are then superseded: the device went back to that key); a new key gets a new one
 * and the superseded one is revoked. `simplereenroll` (renewal, same key or new) always issues a new
 * certificate with the object's renewal validity and revokes nothing: the superseded one stays
 * valid until the device reports the new one stored (report.ts), so a device that loses power
 * mid-rotation still holds a working credential.
 * A refused CSR leaves an object without a live certificate GENERATION_FAILED with the
 * reason (one with a live certificate keeps its state). Read and written with readThenWrite:
 * on SQLite one transaction (BEGIN IMMEDIATE: two enrollments of one device at once issue one
 * after the other); on PostgreSQL one read, then one statement (certificate, states,
 * connection and audit row) written only while the device's enrollment_count is the one read
 * (migration 019): of two enrollments at once one writes, the other reads again and answers
 * from what the first wrote. After it commits, a rotation re-signs the CRLs of the superseded
 * certificates' CAs (best effort).
 */
export async function enrollDevice(
  deps: IssuanceDeps,
  session: DeviceSession,
  label: string,
  csrBody: () => Uint8Array,
  mode: EnrollMode,
  change: { correlationId: string },
  now = new Date(),
): Promise<Enrollment> {
  const { db } = deps;
  const facts = await enrollmentFacts(db, session.device, session.factory.id);
  const { objects } = facts;
  const object = certificateObject(objects, label);
  let csr: ParsedCsr;
  let keyHash: string;
  try {
    if (!facts.plan) throw noPlanRow(session.factory.id);
    assertPlanAllowsEnrollment(facts.plan, objects, object, now);
    csr = parseAndVerifyCsr(csrBody());
    keyHash = publicKeyHash(csr.publicKeySpki);
    assertNotIdentityKey(session, objects, object, keyHash);
  } catch (error) {
    if (isKeyferryError(error)) await failObject(db, session, object, error, now);
    throw error;
  }
  const renewing = mode === 'simplereenroll';
  const validity = renewing ? { seconds: renewalPolicy(object).validitySeconds } : firstValidity(object);
  const ca =
    object.caId === null
      ? undefined
      : await deps.issuingCas.ofVersion(session.factory, object.caId, facts.caVersion(object), validity);
  if (!ca) throw new KeyferryError('internal', `certificate object ${object.name} has no issuing CA`);
  const actor = `device:${session.device.deviceId}`;
  let superseded: number[] = [];
  let keyReused: KeyferryError | undefined;
  const attempt = () =>
    readThenWrite(db, async (reader): Promise<Enrollment> => {
      superseded = [];
      // one read: this object's live certificates, any of another object with the CSR's key,
      // and the device's enrollment_count, the guard of this enrollment's write
      const { count, current } = await enrollmentCertificates(
        reader,
        session.device.rowId,
        object.id,
        keyHash,
      ).then(({ rows }) => {
        if (rows.length === 0) throw notAllowListed(session);
        return {
          count: rows[0]!.enrollment_count,
          current: rows.filter((r): r is typeof r & EnrollmentCertificate => r.id !== null),
        };
      });
      const other = current.find((r) => r.secure_object_id !== object.id);
      if (other) {
        keyReused = keyOfAnotherObject(objects, object, other.object_name);
        throw keyReused;
      }
      const same = renewing ? undefined : current.find((c) => c.public_key_sha256 === keyHash);
      // the enrollment's write (setCompleted) with its audit row, whether it answers with a
      // certificate the device has (`issued` absent) or one it issued
      const completed =
        (serial: string, detail: Record<string, unknown>, issued?: IssuedCertificate) => (trx: Db) =>
          setCompleted(
            trx,
            session,
            objects,
            object,
            issued === undefined,
            now,
            {
              factoryId: session.factory.id,
              actor,
              action: 'device-link.enroll',
              object: `secure-object:${object.name}`,
              detail: {
                mode,
                serial,
                reused: issued === undefined,
                device: session.device.deviceId,
                ...detail,
              },
              correlationId: change.correlationId,
            },
            { count, ...(issued ? { issued } : {}) },
          );
      if (same) {
        // Renewals issued after it and never reported (a device that lost the answer and went
        // back to its key): the device keeps this one, so they are superseded now. Left live,
        // the newest of them would outlive it at the report, which keeps the newest.
        // (all of `current` is this object's: another object's key was refused above)
        const newer = current.filter((c) => c.id > same.id);
        const record = completed(
          same.serial_hex,
          newer.length > 0 ? { superseded: newer.map((c) => c.serial_hex) } : {},
        );
        await recordSuperseding(reader, newer, now, superseded, record);
        return { certificate: fromPem(same.pem, 'CERTIFICATE'), reused: true };
      }
      if (renewing && current.length === 0) {
        throw new KeyferryError(
          'object_not_issued',
          `${object.name} has no certificate to renew for this device; enroll it first with simpleenroll`,
        );
      }
      const cert = await issueDeviceCertificate({
        template: ca.template,
        deviceId: session.identity.deviceId,
        publicKeySpki: csr.publicKeySpki,
        signer: ca.signer,
        now,
      });
      const der = cert.der;
      const issued: IssuedCertificate = {
        factory_id: session.factory.id,
        device_row_id: session.device.rowId,
        secure_object_id: object.id,
        ca_id: ca.id,
        serial_hex: cert.serialHex,
        public_key_sha256: keyHash,
        subject_cn: session.identity.deviceId.hex,
        pem: toPem(der, 'CERTIFICATE'),
        not_before: cert.notBefore.toISOString(),
        not_after: cert.notAfter.toISOString(),
        issued_at: now.toISOString(),
        revoked_at: null,
        revocation_reason: null,
      };
      // a renewal revokes nothing until the device reports the new certificate stored (report.ts)
      const supersedes = renewing ? [] : current;
      const record = completed(
        cert.serialHex,
        renewing
          ? { supersededOnReport: current.map((c) => c.serial_hex) }
          : { superseded: current.map((c) => c.serial_hex) },
        issued,
      );
      await recordSuperseding(reader, supersedes, now, superseded, record);
      return { certificate: der, reused: false };
    });
  const enrollment = await untilNotRaced(attempt, object).catch(async (error: unknown) => {
    if (keyReused && error === keyReused) await failObject(db, session, object, keyReused, now);
    throw error;
  });
  deps.crlRefresher.schedule(superseded);
  return enrollment;
}

/** How often an enrollment is made again when another enrollment of the device was written first. */
const ENROLLMENT_TRIES = 8;

/**
 * `attempt` again while its write finds that another enrollment of the device was written
 * after its read (EnrollmentRaced, PostgreSQL); then the next read sees that one. A device
 * whose own enrollments keep overtaking each other is answered 429 after ENROLLMENT_TRIES.
 */
async function untilNotRaced(
  attempt: () => Promise<Enrollment>,
  object: AssignedObject,
): Promise<Enrollment> {
  for (let tries = 1; ; tries++) {
    try {
      return await attempt();
    } catch (error) {
      if (!(error instanceof EnrollmentRaced)) throw error;
      if (tries === ENROLLMENT_TRIES) {
        const seconds = retryAfterSeconds(1000);
        throw new KeyferryError(
          'rate_limited',
          `${ENROLLMENT_TRIES} other enrollments of ${object.name} for this device were written while this one was being made; send one at a time, and retry after ${seconds} s`,
          { detail: { limit: 'enrollments-at-once', retryAfterSeconds: seconds } },
        );
      }
    }
  }
}

/**
 * The enrollment's `record`, with the certificates it `supersedes` revoked in the same write
 * when there are any (one statement otherwise, on PostgreSQL); their CAs are added to
 * `revokedCas`, whose CRLs are re-signed once the enrollment has committed.
 */
async function recordSuperseding(
  db: Db,
  supersedes: readonly SupersededCertificate[],
  now: Date,
  revokedCas: number[],
  record: (trx: Db) => Promise<void>,
): Promise<void> {
  if (supersedes.length === 0) return record(db);
  await asOneWrite(db, async (trx) => {
    await revokeAsSuperseded(trx, supersedes, now);
    await record(trx);
  });
  revokedCas.push(...supersedes.map((c) => c.ca_id));
}

/** A certificate enrollmentCertificates reads. */
interface EnrollmentCertificate extends SupersededCertificate {
  secure_object_id: number;
  pem: string;
  public_key_sha256: string;
  object_name: string;
}

/**
 * The device's certificates an enrollment of one object must see: the object's live ones
 * (newest first) and any of another object certifying the same key, revoked or not; each row
 * with the device's enrollment_count, and one row with that alone when there are none. No row
 * when the device was deleted.
 */
const enrollmentCertificates = compiledOnce(
  (db, [deviceRowId, objectId, keyHash]: [number, number, string]) =>
    db
      .selectFrom('devices')
      .leftJoin('certificates', (join) =>
        join
          .onRef('certificates.device_row_id', '=', 'devices.id')
          .on((eb) =>
            eb.or([
              eb.and([
                eb('certificates.secure_object_id', '=', objectId),
                eb('certificates.revoked_at', 'is', null),
              ]),
              eb.and([
                eb('certificates.public_key_sha256', '=', keyHash),
                eb('certificates.secure_object_id', '!=', objectId),
              ]),
            ]),
          ),
      )
      .leftJoin('secure_objects', 'secure_objects.id', 'certificates.secure_object_id')
      .select([
        'devices.enrollment_count',
        'certificates.id',
        'certificates.secure_object_id',
        'certificates.ca_id',
        'certificates.pem',
        'certificates.serial_hex',
        'certificates.public_key_sha256',
        'secure_objects.name as object_name',
      ])
      .where('devices.id', '=', deviceRowId)
      .where('devices.deleted_at', 'is', null)
      .orderBy('certificates.id', 'desc'),
);

/**
 * The enrolled object (and its key pair) GENERATION_COMPLETED, the device's connection recorded
 * in the same statement, the enrollment's audit row and the certificate it issued
 * (EnrollmentWrite), whole (recordDeviceStatesAlone); refuses when the device left the
 * allow-list meanwhile (on PostgreSQL EnrollmentRaced, as for another enrollment written
 * first), and then nothing is written, certificate included.
 */
async function setCompleted(
  db: Db,
  session: DeviceSession,
  objects: readonly AssignedObject[],
  object: AssignedObject,
  reused: boolean,
  now: Date,
  audit: AuditEntry,
  enrollment: EnrollmentWrite,
): Promise<void> {
  const keypair = objects.find((o) => o.id === object.keypairId);
  const targets = (keypair ? [object, keypair] : [object]).filter(
    // Asking again for the same certificate does not undo what the device already reported.
    (target) =>
      !(reused && (target.state === 'PROVISIONING_COMPLETED' || target.state === 'GENERATION_COMPLETED')),
  );
  await recordDeviceStatesAlone(
    db,
    session,
    targets.map((t) => ({ secureObjectId: t.id, state: 'GENERATION_COMPLETED' as const, reason: null })),
    now,
    audit,
    enrollment,
  );
}

function publicKeyHash(spki: Uint8Array): string {
  return createHash('sha256').update(spki).digest('hex');
}

/*
 * One key, one purpose: a CSR may not ask to certify the secure element's vendor identity
 * key (whose certificate would then let anyone holding the identity act as the gateway
 * credential too) nor a key already certified for another object of this device (checked in
 * the enrollment's transaction, enrollmentCertificates).
 */

/** What a CSR with a key certified elsewhere should be made with instead. */
function useInstead(objects: readonly AssignedObject[], object: AssignedObject): string {
  const keypair = objects.find((o) => o.id === object.keypairId);
  return keypair
    ? `make the CSR with the key at 0x${keypair.objectId} (${keypair.name})`
    : 'make the CSR with the key of this object';
}

/** Refuses a CSR for the secure element's vendor identity key (it certifies nothing else). */
function assertNotIdentityKey(
  session: DeviceSession,
  objects: readonly AssignedObject[],
  object: AssignedObject,
  keyHash: string,
): void {
  const identityKey = session.identity.publicKeySpki;
  if (identityKey && keyHash === publicKeyHash(identityKey)) {
    throw new KeyferryError(
      'csr_key_reused',
      `the CSR's key is the secure element's vendor identity key (0xF0000000), which is not certified for ${object.name}; ${useInstead(objects, object)}`,
    );
  }
}

/** The refusal of a CSR whose key is already certified for another object of the device. */
function keyOfAnotherObject(
  objects: readonly AssignedObject[],
  object: AssignedObject,
  otherName: string,
): KeyferryError {
  return new KeyferryError(
    'csr_key_reused',
    `the CSR's key is already certified for ${otherName} on this device; ${useInstead(objects, object)}`,
  );
}

/**
 * Records a refused enrollment on the object (GENERATION_FAILED + reason); the router audits
 * it. An object with a live certificate keeps its state: that certificate still works, so a
 * refused request (a bad CSR, a reused key) must not make the state say otherwise.
 */
async function failObject(
  db: Db,
  session: DeviceSession,
  object: AssignedObject,
  error: KeyferryError,
  now: Date,
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    // removed from the allow-list meanwhile: that, not the CSR, is the answer
    if (!(await touchDevice(trx, session.device.rowId, now))) throw notAllowListed(session);
    const live = await trx
      .selectFrom('certificates')
      .select('id')
      .where('device_row_id', '=', session.device.rowId)
      .where('secure_object_id', '=', object.id)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    if (live) return;
    await setObjectState(
      trx,
      session.device.rowId,
      object.id,
      'GENERATION_FAILED',
      `${error.code}: ${error.message}`,
      now,
    );
  });
}

import { KeyferryError } from '@keyferry/core';
import { z } from 'zod';
import type { AuditEntry } from '../audit/audit-log.ts';
import { assignedObjectsWithLive } from '../el2g/assigned-objects.ts';
import type { CrlRefresher, RefreshDeps } from '../revocation/refresh.ts';
import { asOneWrite, readThenWrite } from '../storage/database.ts';
import type { ProvisioningState } from '../storage/tables.ts';
import { recordDeviceStates, recordDeviceStatesAlone } from './device-records.ts';
import { isIssued } from './plan-gate.ts';
import type { DeviceSession } from './session.ts';
import { revokeAsSuperseded, type SupersededCertificate, supersededByNewest } from './supersede.ts';

export const reportSchema = z.strictObject({
  results: z
    .array(
      z.strictObject({
        name: z.string().min(1).max(128),
        status: z.enum(['SUCCESS', 'FAILED']),
        detail: z.string().max(1024).optional(),
      }),
    )
    .min(1)
    .max(64),
});
export type Report = z.output<typeof reportSchema>;

/**
 * The device says which objects it stored: SUCCESS → PROVISIONING_COMPLETED, FAILED →
 * PROVISIONING_FAILED with its detail. A device whose secure element fails before enrolling
 * (key generation, CSR signing) reports FAILED for an object never issued (still generating,
 * or a retry failing again) → GENERATION_FAILED with its detail. Every name must be an object
 * assigned to the device, and issued to it for SUCCESS; otherwise nothing changes.
 * SUCCESS for a CERTIFICATE object that was renewed ends the rotation: the certificates the
 * newest one superseded are revoked (`superseded`) now that the device holds the new one.
 * Read and written with readThenWrite: on SQLite one transaction; on PostgreSQL the objects
 * (with their live certificates counted), then one statement, in a transaction only with a
 * revocation.
 */
export async function recordReport(
  deps: RefreshDeps & { crlRefresher: CrlRefresher },
  session: DeviceSession,
  report: Report,
  change: { correlationId: string },
  now = new Date(),
): Promise<{ objects: { name: string; state: ProvisioningState }[] }> {
  const { db } = deps;
  // one read: the objects with their states and how many live certificates each has
  const { updates, revokedCas } = await readThenWrite(db, async (reader) => {
    const objects = await assignedObjectsWithLive(reader, session.device);
    const updates = report.results.map((result) => judge(objects, result));
    const superseded: SupersededCertificate[] = [];
    for (const u of updates) {
      if (u.state !== 'PROVISIONING_COMPLETED' || u.object.type !== 'CERTIFICATE') continue;
      // more than one live: a rotation that this report ends
      if (u.object.liveCertificates > 1)
        superseded.push(...(await supersededByNewest(reader, session.device.rowId, u.object.id)));
    }
    const states = updates.map((u) => ({ secureObjectId: u.object.id, state: u.state, reason: u.reason }));
    const audit: AuditEntry = {
      factoryId: session.factory.id,
      actor: `device:${session.device.deviceId}`,
      action: 'device-link.report',
      object: `device:${session.device.deviceId}`,
      detail: {
        results: updates.map((u) => ({ name: u.object.name, state: u.state, reason: u.reason })),
        ...(superseded.length > 0 ? { superseded: superseded.map((c) => c.serial_hex) } : {}),
      },
      correlationId: change.correlationId,
    };
    // the states, the connection and the audit row, with the revocations when there are any:
    // refused if the device is gone, which undoes the revocations
    if (superseded.length === 0) await recordDeviceStatesAlone(reader, session, states, now, audit);
    else {
      await asOneWrite(reader, async (trx) => {
        await revokeAsSuperseded(trx, superseded, now);
        await recordDeviceStates(trx, session, states, now, audit);
      });
    }
    return { updates, revokedCas: superseded.map((c) => c.ca_id) };
  });
  deps.crlRefresher.schedule(revokedCas);
  return { objects: updates.map((u) => ({ name: u.object.name, state: u.state })) };
}

type ReportedObject = Awaited<ReturnType<typeof assignedObjectsWithLive>>[number];

/** The state one result sets, or the refusal of a name not assigned, or of SUCCESS for an object never issued. */
function judge(objects: readonly ReportedObject[], result: Report['results'][number]) {
  const object = objects.find((o) => o.name === result.name);
  if (!object) {
    throw new KeyferryError(
      'unknown_label',
      `no object ${JSON.stringify(result.name)} is assigned to this device`,
    );
  }
  const issued = isIssued(object);
  if (!issued && result.status === 'SUCCESS') {
    throw new KeyferryError(
      'object_not_issued',
      `${object.name} was never issued to this device (state ${object.state}); enroll it before reporting it`,
    );
  }
  const state: ProvisioningState = !issued
    ? 'GENERATION_FAILED'
    : result.status === 'SUCCESS'
      ? 'PROVISIONING_COMPLETED'
      : 'PROVISIONING_FAILED';
  return {
    object,
    state,
    reason: result.status === 'FAILED' ? (result.detail ?? 'the device reported a failure') : null,
  };
}

import { parseCrl } from '@keyferry/core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS } from '../../../../test/support/processes.ts';
import { currentCrl } from '../../src/revocation/crl-store.ts';
import { CrlRefresher } from '../../src/revocation/refresh.ts';
import { statementsSent } from '../../src/storage/statement-count.ts';
import { BACKENDS, type BackendName, untilWaitingOnALock } from '../support/databases.ts';
import {
  type DeviceLinkFixture,
  freshCsr,
  keepAliveLink,
  provisionOverDeviceLink,
  startDeviceLinkFixture,
  type TestDevice,
} from './fixture.ts';

const MANIFEST = '/device-link/v1/manifest';
const EST = '/.well-known/est/fio-device-gateway-ca';
const CSR_HEADERS = { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' };
const JSON_HEADERS = { 'content-type': 'application/json' };
const BOTH_STORED = JSON.stringify({
  results: [
    { name: 'fio-device-gateway-ca-kp', status: 'SUCCESS' },
    { name: 'fio-device-gateway-ca', status: 'SUCCESS' },
  ],
});

/** No bulk-job poll during a test: each request's statements are the only ones sent. */
const QUIET_JOBS = { jobs: { pollMs: 3_600_000 } };
/** The statements of re-signing a CA's CRL after a revocation commits, off the request (revocation/refresh.ts). */
const CRL_RESIGN = 7;

/** The service, with one device provisioned: what its first connection reads once is read. */
async function fixture(backend: BackendName) {
  const f = await startDeviceLinkFixture(backend, {}, QUIET_JOBS);
  await provisionOverDeviceLink(f.call, await f.device());
  return f;
}

/**
 * A device-link request reads, decides, then writes (storage/database.ts, readThenWrite). On
 * SQLite all of it is one transaction. On PostgreSQL (READ COMMITTED) the reads run outside a
 * transaction and the write is one statement (device-records.ts, writeAndAudit: the
 * certificate, the states, the connection and the audit row), in a transaction only when the
 * request also revokes: a device's three requests send 8 statements instead of 16.
 */
describe.each(BACKENDS)(
  'what a device-link request sends to the database on %s',
  { timeout: PROCESS_TEST_TIMEOUT_MS },
  (backend) => {
    let f: DeviceLinkFixture;
    beforeAll(async () => {
      f = await fixture(backend);
    });
    afterAll(async () => {
      await f?.svc.stop();
    });
    const pg = backend === 'postgres';
    const db = () => f.svc.service.ctx.database.db;
    const storedCrlNumber = async (caId: number) =>
      (await db().selectFrom('crls').select('crl_number').where('ca_id', '=', caId).executeTakeFirstOrThrow())
        .crl_number;

    /**
     * A call's answer and the statements it sent, with those of the CRL re-sign it scheduled
     * (sent after the answer, so counted once it settled).
     */
    async function counted(call: () => ReturnType<DeviceLinkFixture['call']>) {
      const before = statementsSent();
      const answer = await call();
      expect(answer.status, answer.text).toBe(200);
      await f.svc.service.ctx.crlRefresher.settled();
      return { answer, statements: statementsSent() - before };
    }
    const enroll = (link: ReturnType<typeof keepAliveLink>, base64: string, op = 'simpleenroll') =>
      counted(() => link.call({ method: 'POST', path: `${EST}/${op}`, headers: CSR_HEADERS, body: base64 }));
    const report = (link: ReturnType<typeof keepAliveLink>, body = BOTH_STORED) =>
      counted(() =>
        link.call({ method: 'POST', path: '/device-link/v1/report', headers: JSON_HEADERS, body }),
      );
    const certificates = (device: TestDevice) =>
      db()
        .selectFrom('certificates')
        .select(['serial_hex', 'revocation_reason'])
        .where('subject_cn', '=', device.uid.hex)
        .orderBy('id')
        .execute();
    const actions = async (device: TestDevice) =>
      (
        await db()
          .selectFrom('audit_log')
          .select('action')
          .where('actor', '=', `device:${device.uid.decimal}`)
          .orderBy('id')
          .execute()
      ).map((r) => r.action);

    it("provisions a device with each write one statement; on PostgreSQL a transaction only for the enrollment, holding the device's lock", async () => {
      const device = await f.device();
      const link = keepAliveLink(f, device);
      try {
        // the device's row (once per connection), its objects with their newest live certificates,
        // the write (SQLite: BEGIN, the states, the device's state, the audit row, COMMIT)
        const manifest = await counted(() => link.call({ path: MANIFEST }));
        expect(manifest.statements).toBe(pg ? 3 : 7);
        // the objects with the plan and their CAs, the certificates with the device's enrollment
        // count, the write (SQLite: BEGIN, the certificates, the certificate insert, the states, the
        // device's state, the audit row, COMMIT; PostgreSQL: one statement, made only while the
        // count is the one read)
        const enrolled = await enroll(link, (await freshCsr()).base64);
        expect(enrolled.statements).toBe(pg ? 3 : 8);
        // the objects with their live certificates counted (one each: no rotation to end), the
        // write (SQLite: BEGIN, the objects, the states, the device's state, the audit row, COMMIT)
        const stored = await report(link);
        expect(stored.statements).toBe(pg ? 2 : 6);
      } finally {
        link.close();
      }
      const [issued] = await certificates(device);
      expect(issued?.revocation_reason).toBeNull();
      expect(await f.states(device)).toEqual({
        'fio-device-gateway-ca-kp': { state: 'PROVISIONING_COMPLETED', reason: null },
        'fio-device-gateway-ca': { state: 'PROVISIONING_COMPLETED', reason: null },
      });
      expect(await actions(device)).toEqual([
        'device-link.manifest',
        'device-link.enroll',
        'device-link.report',
      ]);
    });

    it('revokes what a new key or a stored renewal supersedes in the same transaction as the write', async () => {
      const device = await f.device();
      const link = keepAliveLink(f, device);
      try {
        await counted(() => link.call({ path: MANIFEST }));
        await enroll(link, (await freshCsr()).base64);
        // a new key for the same object: the old certificate is revoked with the new one's write,
        // the reads, BEGIN, the revocation, the write, COMMIT on PostgreSQL; after the answer the
        // CA's CRL is re-signed
        const rekeyed = await enroll(link, (await freshCsr()).base64);
        expect(rekeyed.statements).toBe((pg ? 6 : 9) + CRL_RESIGN);
        expect((await certificates(device)).map((c) => c.revocation_reason)).toEqual(['superseded', null]);
        await report(link);
        // a renewal revokes nothing itself: one write on PostgreSQL again (and one read more than
        // an enrollment on both backends)
        const renewed = await enroll(link, (await freshCsr()).base64, 'simplereenroll');
        expect(renewed.statements).toBe(pg ? 4 : 9);
        const live = await certificates(device);
        expect(live.map((c) => c.revocation_reason)).toEqual(['superseded', null, null]);
        // two live certificates until the report: the manifest names the newest
        const manifest = await counted(() => link.call({ path: MANIFEST }));
        const gateway = manifest.answer.json.objects.find(
          (o: { name: string }) => o.name === 'fio-device-gateway-ca',
        );
        expect(gateway.certificateSerial).toBe(live[2]!.serial_hex);
        // its report ends the rotation (two live certificates): the older one read, then the
        // revocation and the write in one transaction
        const stored = await report(link);
        expect(stored.statements).toBe((pg ? 6 : 8) + CRL_RESIGN);
        expect((await certificates(device)).map((c) => c.revocation_reason)).toEqual([
          'superseded',
          'superseded',
          null,
        ]);
      } finally {
        link.close();
      }
      expect(await f.states(device)).toEqual({
        'fio-device-gateway-ca-kp': { state: 'PROVISIONING_COMPLETED', reason: null },
        'fio-device-gateway-ca': { state: 'PROVISIONING_COMPLETED', reason: null },
      });
    });

    it('answers a rekey before its CRL is re-signed; a CRL read meanwhile lists the revocation', async () => {
      const refresher = f.svc.service.ctx.crlRefresher;
      const scheduled: number[] = [];
      const held = vi.spyOn(refresher, 'schedule').mockImplementation((caIds) => {
        scheduled.push(...caIds);
      });
      const device = await f.device();
      const link = keepAliveLink(f, device);
      try {
        await counted(() => link.call({ path: MANIFEST }));
        await enroll(link, (await freshCsr()).base64);
        const [first] = await db()
          .selectFrom('certificates')
          .select(['ca_id', 'serial_hex'])
          .where('subject_cn', '=', device.uid.hex)
          .execute();
        const deps = { db: db(), custody: f.svc.service.ctx.custody };
        const signed = await currentCrl(deps, first!.ca_id);
        // the re-sign is held back, and the rekey is answered all the same
        await enroll(link, (await freshCsr()).base64);
        expect(scheduled).toEqual([first!.ca_id]);
        expect(await storedCrlNumber(first!.ca_id)).toBe(signed.crlNumber);
        // a read finds the CRL stale and signs it itself
        const read = await currentCrl(deps, first!.ca_id);
        expect(read.crlNumber).toBe(signed.crlNumber + 1);
        expect(parseCrl(read.der).entries.map((e) => e.serialHex)).toContain(first!.serial_hex);
        // the held re-sign, let go, finds it current and signs nothing more
        held.mockRestore();
        refresher.schedule(scheduled);
        await refresher.settled();
        expect(await storedCrlNumber(first!.ca_id)).toBe(read.crlNumber);
      } finally {
        held.mockRestore();
        link.close();
      }
    });

    it('waits at shutdown for the re-signs pending, not for a rest', async () => {
      const device = await f.device();
      await provisionOverDeviceLink(f.call, device);
      const [cert] = await db()
        .selectFrom('certificates')
        .select(['id', 'ca_id'])
        .where('subject_cn', '=', device.uid.hex)
        .execute();
      // a rest of a million re-signs' time: only settled() cutting it short lets the test end
      const ctx = f.svc.service.ctx;
      const refresher = new CrlRefresher({ db: db(), custody: ctx.custody, log: ctx.log }, 1e6);
      const before = (await currentCrl({ db: db(), custody: ctx.custody }, cert!.ca_id)).crlNumber;
      const revoked = (at: string | null) =>
        db()
          .updateTable('certificates')
          .set({ revoked_at: at, revocation_reason: at && 'superseded' })
          .where('id', '=', cert!.id)
          .execute();
      await revoked(new Date().toISOString());
      refresher.schedule([cert!.ca_id]);
      await vi.waitUntil(async () => (await storedCrlNumber(cert!.ca_id)) === before + 1, {
        timeout: 30_000,
      });
      // in the rest now: a change scheduled meanwhile would wait for its end
      await revoked(null);
      refresher.schedule([cert!.ca_id]);
      await refresher.settled();
      expect(await storedCrlNumber(cert!.ca_id)).toBe(before + 2);
    });

    it('coalesces re-signs scheduled while one runs, and shares one signing among concurrent reads', async () => {
      const refresher = f.svc.service.ctx.crlRefresher;
      const device = await f.device();
      await provisionOverDeviceLink(f.call, device);
      const [cert] = await db()
        .selectFrom('certificates')
        .select(['id', 'ca_id'])
        .where('subject_cn', '=', device.uid.hex)
        .execute();
      const deps = { db: db(), custody: f.svc.service.ctx.custody };
      const revoke = () =>
        db()
          .updateTable('certificates')
          .set({ revoked_at: new Date().toISOString(), revocation_reason: 'superseded' })
          .where('id', '=', cert!.id)
          .execute();
      const before = (await currentCrl(deps, cert!.ca_id)).crlNumber;
      await revoke();
      // thirty schedules before the first one runs: one re-sign (each alone would read the
      // revocation state again, 2 statements, 29 times)
      const sent = statementsSent();
      for (let i = 0; i < 30; i++) refresher.schedule([cert!.ca_id]);
      await refresher.settled();
      expect(statementsSent() - sent).toBe(CRL_RESIGN);
      expect(await storedCrlNumber(cert!.ca_id)).toBe(before + 1);
      // twenty reads of a stale CRL at once: one signing, the same CRL for all
      await db().updateTable('certificates').set({ revoked_at: null }).where('id', '=', cert!.id).execute();
      await revoke();
      const readSent = statementsSent();
      const reads = await Promise.all(Array.from({ length: 20 }, () => currentCrl(deps, cert!.ca_id)));
      // each read finds it stale (2 statements), one of them signs (the rest of a re-sign). A read
      // whose two were answered after the re-sign's write committed, but before this process
      // kept the CRL it signed, finds it current and reads it once (seen once in a busy run)
      const readStatements = statementsSent() - readSent;
      expect(readStatements).toBeGreaterThanOrEqual(20 * 2 + CRL_RESIGN - 2);
      expect(readStatements).toBeLessThanOrEqual(20 * 3 + CRL_RESIGN - 2);
      expect(new Set(reads.map((r) => r.crlNumber))).toEqual(new Set([before + 2]));
      expect(await storedCrlNumber(cert!.ca_id)).toBe(before + 2);
    });
  },
);

/**
 * PostgreSQL: the enrollment's and the report's one statement locks the device's row before
 * it writes anything, so a removal that commits while the statement waits for that row
 * leaves nothing behind: no certificate, no state, no audit row.
 */
describe('a device removed while its write waits for its row, on postgres', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  let f: DeviceLinkFixture;
  beforeAll(async () => {
    f = await fixture('postgres');
  });
  afterAll(async () => {
    await f?.svc.stop();
  });
  const db = () => f.svc.service.ctx.database.db;

  async function stored(device: TestDevice) {
    const certificates = await db()
      .selectFrom('certificates')
      .select(['serial_hex', 'revoked_at'])
      .where('subject_cn', '=', device.uid.hex)
      .orderBy('id')
      .execute();
    const audit = await db()
      .selectFrom('audit_log')
      .select('action')
      .where('actor', '=', `device:${device.uid.decimal}`)
      .orderBy('id')
      .execute();
    const row = await db()
      .selectFrom('devices')
      .select(['state_rank', 'last_connection'])
      .where('device_id', '=', device.uid.decimal)
      .executeTakeFirstOrThrow();
    return { certificates, audit, row, states: await f.states(device) };
  }

  /** `request` sent on the device's open connection while a transaction removes the device. */
  async function duringRemoval(
    device: TestDevice,
    link: ReturnType<typeof keepAliveLink>,
    request: Parameters<DeviceLinkFixture['call']>[1],
  ) {
    let answer: ReturnType<DeviceLinkFixture['call']> | undefined;
    await db()
      .transaction()
      .execute(async (trx) => {
        await trx
          .updateTable('devices')
          .set({ deleted_at: new Date().toISOString() })
          .where('device_id', '=', device.uid.decimal)
          .where('deleted_at', 'is', null)
          .execute();
        answer = link.call(request);
        await untilWaitingOnALock(db());
      });
    return answer!;
  }

  it('refuses the enrollment, with nothing written', async () => {
    const device = await f.device();
    const link = keepAliveLink(f, device);
    try {
      expect((await link.call({ path: MANIFEST })).status).toBe(200);
      const before = await stored(device);
      const refused = await duringRemoval(device, link, {
        method: 'POST',
        path: `${EST}/simpleenroll`,
        headers: CSR_HEADERS,
        body: (await freshCsr()).base64,
      });
      expect(refused.status).toBe(403);
      expect(refused.json.code).toBe('device_not_allowlisted');
      expect(refused.json.detail).toContain(
        `device ${device.uid.decimal} was removed from factory demo's allow-list`,
      );
      // the states of the removed row are no longer the device's (f.states reads active rows);
      // the refusal is audited, as every refusal is
      const after = await stored(device);
      expect({ ...after, states: before.states }).toEqual({
        ...before,
        audit: [...before.audit, { action: 'device-link.refused' }],
      });
      expect(before.certificates).toEqual([]);
    } finally {
      link.close();
    }
  });

  it('refuses a report that would end a rotation, revoking nothing', async () => {
    const device = await f.device();
    const link = keepAliveLink(f, device);
    try {
      expect((await link.call({ path: MANIFEST })).status).toBe(200);
      for (const op of ['simpleenroll', 'simplereenroll']) {
        const answer = await link.enroll(op);
        expect(answer.status, answer.text).toBe(200);
      }
      const before = await stored(device);
      expect(before.certificates.map((c) => c.revoked_at)).toEqual([null, null]);
      const refused = await duringRemoval(device, link, {
        method: 'POST',
        path: '/device-link/v1/report',
        headers: JSON_HEADERS,
        body: BOTH_STORED,
      });
      expect(refused.json.code).toBe('device_not_allowlisted');
      const after = await stored(device);
      expect({ ...after, states: before.states }).toEqual({
        ...before,
        audit: [...before.audit, { action: 'device-link.refused' }],
      });
    } finally {
      link.close();
    }
  });
});

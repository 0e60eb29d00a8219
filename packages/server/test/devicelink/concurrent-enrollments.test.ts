import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS } from '../support/databases.ts';
import { type DeviceLinkFixture, freshCsr, startDeviceLinkFixture, type TestDevice } from './fixture.ts';

const ENROLL = '/.well-known/est/fio-device-gateway-ca/simpleenroll';
const CSR_HEADERS = { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' };

/**
 * An agent that retries while its first request is still running, or two agents on one device:
 * enrollments of one device at once are decided one after the other, on either backend.
 */
describe.each(BACKENDS)('enrollments of one device at once (%s)', (backend) => {
  let f: DeviceLinkFixture;

  beforeAll(async () => {
    f = await startDeviceLinkFixture(backend);
  });
  afterAll(async () => {
    await f?.svc.stop();
  });

  const enrollAtOnce = (device: TestDevice, bodies: string[]) =>
    Promise.all(
      bodies.map((body) => f.call(device, { method: 'POST', path: ENROLL, headers: CSR_HEADERS, body })),
    );
  const certificates = (device: TestDevice) =>
    f.svc.service.ctx.database.db
      .selectFrom('certificates')
      .select(['serial_hex', 'revoked_at'])
      .where('subject_cn', '=', device.uid.hex)
      .orderBy('id')
      .execute();

  it('four new keys at once: one certificate stays live, the others are revoked as superseded', async () => {
    const device = await f.device();
    await f.call(device, { path: '/device-link/v1/manifest' });
    const csrs = await Promise.all([1, 2, 3, 4].map(() => freshCsr()));
    const answers = await enrollAtOnce(
      device,
      csrs.map((c) => c.base64),
    );
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
    const rows = await certificates(device);
    expect(rows).toHaveLength(4);
    expect(rows.filter((r) => r.revoked_at === null)).toHaveLength(1);
  });

  it('one CSR sent four times at once: one certificate, answered four times', async () => {
    const device = await f.device();
    await f.call(device, { path: '/device-link/v1/manifest' });
    const csr = await freshCsr();
    const answers = await enrollAtOnce(device, [csr.base64, csr.base64, csr.base64, csr.base64]);
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
    expect(new Set(answers.map((a) => a.text)).size).toBe(1);
    const rows = await certificates(device);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.revoked_at).toBeNull();
  });
});

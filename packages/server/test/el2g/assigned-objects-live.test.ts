import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assignedObjectsWithLive } from '../../src/el2g/assigned-objects.ts';
import { insertFactory } from '../../src/factories/factories.ts';
import { statementsSent } from '../../src/storage/statement-count.ts';
import { seedGatewayObjects } from '../allowlist/fixtures.ts';
import { BACKENDS, freshDatabase } from '../support/databases.ts';

/**
 * The manifest's one read: the device's objects in the device-link's order, each with the
 * device's newest live certificate of it (the serial the manifest names, its expiry, whether
 * an operator marked it for rotation), null when there is none.
 */
describe.each(BACKENDS)('assigned objects with their live certificates on %s', (backend) => {
  let database: Awaited<ReturnType<typeof freshDatabase>>;
  let device: { rowId: number; groupId: number };
  let other: number;
  let objects: { caId: number; keypair: number; cert: number };
  let factoryId: number;
  const db = () => database.db;

  beforeAll(async () => {
    database = await freshDatabase(backend);
    const factory = await insertFactory(db(), 'live', new Date());
    factoryId = factory.id;
    const now = new Date().toISOString();
    const group = await db()
      .insertInto('device_groups')
      .values({ factory_id: factory.id, nc12: '935389312472', name: 'g', production: 0, created_at: now })
      .returning('id')
      .executeTakeFirstOrThrow();
    objects = await seedGatewayObjects(db(), factory.id);
    const row = (id: string) =>
      db()
        .insertInto('devices')
        .values({
          factory_id: factory.id,
          device_id: id,
          group_id: group.id,
          nc12: '935389312472',
          added_at: now,
          deleted_at: null,
          last_connection: null,
        })
        .returning('id')
        .executeTakeFirstOrThrow();
    device = { rowId: (await row('1')).id, groupId: group.id };
    other = (await row('2')).id;
  });
  afterAll(async () => {
    await database?.dispose();
  });

  const issue = async (deviceRowId: number, notAfter: string) => {
    const serial = randomBytes(16).toString('hex');
    const now = new Date().toISOString();
    const { id } = await db()
      .insertInto('certificates')
      .values({
        factory_id: factoryId,
        device_row_id: deviceRowId,
        secure_object_id: objects.cert,
        ca_id: objects.caId,
        serial_hex: serial,
        public_key_sha256: randomBytes(32).toString('hex'),
        subject_cn: 'test',
        pem: 'not read here',
        not_before: now,
        not_after: notAfter,
        issued_at: now,
        revoked_at: null,
        revocation_reason: null,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    return { id, serial };
  };
  const set = (id: number, values: { revoked_at?: string; rotation_requested_at?: string }) =>
    db().updateTable('certificates').set(values).where('id', '=', id).execute();
  const live = async () => {
    const sent = statementsSent();
    const found = await assignedObjectsWithLive(db(), device);
    expect(statementsSent() - sent).toBe(1);
    return found.map((o) => [o.name, o.state, o.live]);
  };

  it('names the newest live certificate, an older one once it is revoked, none after that', async () => {
    expect(await live()).toEqual([
      ['fio-device-gateway-ca-kp', 'GENERATION_ON_CONNECTION', null],
      ['fio-device-gateway-ca', 'GENERATION_ON_CONNECTION', null],
    ]);
    const older = await issue(device.rowId, '2027-01-01T00:00:00.000Z');
    const newer = await issue(device.rowId, '2028-01-01T00:00:00.000Z');
    await issue(other, '2029-01-01T00:00:00.000Z'); // another device's: not this one's
    expect((await live())[1]).toEqual([
      'fio-device-gateway-ca',
      'GENERATION_ON_CONNECTION',
      { serial: newer.serial, notAfter: '2028-01-01T00:00:00.000Z', rotate: false },
    ]);
    await set(newer.id, { revoked_at: new Date().toISOString() });
    await set(older.id, { rotation_requested_at: new Date().toISOString() });
    expect((await live())[1]?.[2]).toEqual({
      serial: older.serial,
      notAfter: '2027-01-01T00:00:00.000Z',
      rotate: true,
    });
    await set(older.id, { revoked_at: new Date().toISOString() });
    expect((await live()).map((o) => o[2])).toEqual([null, null]);
  });
});

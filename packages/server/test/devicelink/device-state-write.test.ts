import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordDeviceStates, setObjectState } from '../../src/devicelink/device-records.ts';
import type { DeviceSession } from '../../src/devicelink/session.ts';
import { insertFactory } from '../../src/factories/factories.ts';
import { statementsSent } from '../../src/storage/statement-count.ts';
import type { ProvisioningState } from '../../src/storage/tables.ts';
import { seedGatewayObjects } from '../allowlist/fixtures.ts';
import { BACKENDS, freshDatabase } from '../support/databases.ts';

/**
 * A device's state (devices.state_rank, the least advanced of its objects' states) kept with
 * each write of its objects' states. On PostgreSQL the write and the recomputation are one
 * statement whose own upsert it cannot see (device-records.ts, writeAndRank): the rows it
 * wrote must count with their new states, its other rows with their stored ones.
 */
describe.each(BACKENDS)('object states and the device state on %s', (backend) => {
  let database: Awaited<ReturnType<typeof freshDatabase>>;
  let session: DeviceSession;
  let objects: { keypair: number; cert: number };
  const db = () => database.db;
  const device = () =>
    db()
      .selectFrom('devices')
      .select(['state_rank', 'state_at', 'last_connection'])
      .where('id', '=', session.device.rowId)
      .executeTakeFirstOrThrow();
  const write = (changes: [number, ProvisioningState][], now: Date) =>
    recordDeviceStates(
      db(),
      session,
      changes.map(([secureObjectId, state]) => ({ secureObjectId, state, reason: null })),
      now,
    );

  beforeAll(async () => {
    database = await freshDatabase(backend);
    const factory = await insertFactory(db(), 'states', new Date());
    const now = new Date().toISOString();
    const group = await db()
      .insertInto('device_groups')
      .values({ factory_id: factory.id, nc12: '935389312472', name: 'g', production: 0, created_at: now })
      .returning('id')
      .executeTakeFirstOrThrow();
    objects = await seedGatewayObjects(db(), factory.id);
    const row = await db()
      .insertInto('devices')
      .values({
        factory_id: factory.id,
        device_id: '1234',
        group_id: group.id,
        nc12: '935389312472',
        added_at: now,
        deleted_at: null,
        last_connection: null,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    session = {
      factory,
      device: { rowId: row.id, deviceId: '1234', nc12: '935389312472', groupId: group.id, groupName: 'g' },
    } as DeviceSession;
  });
  afterAll(async () => {
    await database?.dispose();
  });

  it('counts the rows just written with their new states and the others with their stored ones', async () => {
    expect((await device()).state_rank).toBe(2); // no row: GENERATION_ON_CONNECTION

    await setObjectState(db(), session.device.rowId, objects.cert, 'GENERATION_TRIGGERED', null, new Date());
    expect((await device()).state_rank).toBe(3);

    const t1 = new Date(Date.parse('2026-01-02T03:04:05.000Z'));
    const sent = statementsSent();
    await write(
      [
        [objects.keypair, 'GENERATION_COMPLETED'],
        [objects.cert, 'PROVISIONING_COMPLETED'],
      ],
      t1,
    );
    // one round trip on PostgreSQL; the upsert and the update on SQLite
    expect(statementsSent() - sent).toBe(backend === 'postgres' ? 1 : 2);
    expect(await device()).toEqual({
      state_rank: 4,
      state_at: t1.toISOString(),
      last_connection: t1.toISOString(),
    });

    await write([[objects.cert, 'PROVISIONING_FAILED']], new Date());
    expect((await device()).state_rank).toBe(1); // a failure wins

    // the stored FAILED row is replaced, not counted; the keypair row not written still is
    await write([[objects.cert, 'PROVISIONING_COMPLETED']], new Date());
    expect((await device()).state_rank).toBe(4);
    await write([[objects.keypair, 'PROVISIONING_COMPLETED']], new Date());
    expect((await device()).state_rank).toBe(5);
  });

  it('refuses a device removed meanwhile, and its transaction leaves the states as they were', async () => {
    const before = await device();
    const removed = new Date().toISOString();
    await db()
      .updateTable('devices')
      .set({ deleted_at: removed })
      .where('id', '=', session.device.rowId)
      .execute();
    try {
      await expect(
        db()
          .transaction()
          .execute((trx) =>
            recordDeviceStates(
              trx,
              session,
              [{ secureObjectId: objects.cert, state: 'PROVISIONING_FAILED', reason: 'x' }],
              new Date(),
            ),
          ),
      ).rejects.toThrow(/device 1234 was removed from factory states's allow-list/);
      expect(await device()).toEqual(before);
      const rows = await db()
        .selectFrom('device_objects')
        .select(['secure_object_id', 'state'])
        .where('device_row_id', '=', session.device.rowId)
        .orderBy('secure_object_id')
        .execute();
      expect(rows.map((r) => r.state)).toEqual(['PROVISIONING_COMPLETED', 'PROVISIONING_COMPLETED']);
    } finally {
      await db()
        .updateTable('devices')
        .set({ deleted_at: null })
        .where('id', '=', session.device.rowId)
        .execute();
    }
  });
});

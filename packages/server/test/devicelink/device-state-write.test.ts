import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEntry } from '../../src/audit/audit-log.ts';
import {
  recordDeviceStates,
  recordDeviceStatesAlone,
  type StateChange,
  setObjectState,
} from '../../src/devicelink/device-records.ts';
import type { DeviceSession } from '../../src/devicelink/session.ts';
import { insertFactory } from '../../src/factories/factories.ts';
import { statementsSent } from '../../src/storage/statement-count.ts';
import type { ProvisioningState } from '../../src/storage/tables.ts';
import { seedGatewayObjects } from '../allowlist/fixtures.ts';
import { BACKENDS, freshDatabase, untilWaitingOnALock } from '../support/databases.ts';

/**
 * What a device-link request records about the device: its objects' states, its own state
 * (devices.state_rank, the least advanced of its objects' states), its connection and the
 * request's audit row. On PostgreSQL that is one statement (device-records.ts, writeAndAudit)
 * that cannot see its own upsert: the rows it wrote must count with their new states, its
 * other rows with their stored ones; and the audit row is written only with the device's.
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
  const objectStates = () =>
    db()
      .selectFrom('device_objects')
      .select(['secure_object_id', 'state'])
      .where('device_row_id', '=', session.device.rowId)
      .orderBy('secure_object_id')
      .execute();
  let audits = 0;
  const auditEntry = (n: number): AuditEntry => ({
    factoryId: session.factory.id,
    actor: 'device:1234',
    action: 'test.write',
    object: 'device:1234',
    detail: { n, k: ++audits },
    correlationId: `c-${audits}`,
  });
  const auditRows = () =>
    db()
      .selectFrom('audit_log')
      .select(['at', 'factory_id', 'actor', 'action', 'object', 'detail', 'correlation_id'])
      .where('action', '=', 'test.write')
      .orderBy('id')
      .execute();
  const write = (changes: [number, ProvisioningState][], now: Date) =>
    recordDeviceStates(
      db(),
      session,
      changes.map(([secureObjectId, state]) => ({ secureObjectId, state, reason: null })),
      now,
      auditEntry(changes.length),
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
    // one round trip on PostgreSQL; the upsert, the update and the audit insert on SQLite
    expect(statementsSent() - sent).toBe(backend === 'postgres' ? 1 : 3);
    expect(await device()).toEqual({
      state_rank: 4,
      state_at: t1.toISOString(),
      last_connection: t1.toISOString(),
    });
    expect(await auditRows()).toEqual([
      {
        at: t1.toISOString(),
        factory_id: session.factory.id,
        actor: 'device:1234',
        action: 'test.write',
        object: 'device:1234',
        detail: JSON.stringify({ n: 2, k: 1 }),
        correlation_id: 'c-1',
      },
    ]);

    await write([[objects.cert, 'PROVISIONING_FAILED']], new Date());
    expect((await device()).state_rank).toBe(1); // a failure wins

    // the stored FAILED row is replaced, not counted; the keypair row not written still is
    await write([[objects.cert, 'PROVISIONING_COMPLETED']], new Date());
    expect((await device()).state_rank).toBe(4);
    await write([[objects.keypair, 'PROVISIONING_COMPLETED']], new Date());
    expect((await device()).state_rank).toBe(5);
    expect((await auditRows()).map((r) => r.correlation_id)).toEqual(['c-1', 'c-2', 'c-3', 'c-4']);
  });

  it('records a connection that changes no state with its audit row, the state left alone', async () => {
    const before = await device();
    const t2 = new Date(Date.parse('2026-02-03T04:05:06.000Z'));
    const sent = statementsSent();
    await write([], t2);
    expect(statementsSent() - sent).toBe(backend === 'postgres' ? 1 : 2);
    expect(await device()).toEqual({ ...before, last_connection: t2.toISOString() });
    const last = (await auditRows()).at(-1);
    expect([last?.at, last?.correlation_id, last?.detail]).toEqual([
      t2.toISOString(),
      'c-5',
      '{"n":0,"k":5}',
    ]);
  });

  it('records a request alone in one statement on PostgreSQL, in a transaction on SQLite', async () => {
    const t3 = new Date(Date.parse('2026-03-04T05:06:07.000Z'));
    const sent = statementsSent();
    await recordDeviceStatesAlone(
      db(),
      session,
      [{ secureObjectId: objects.cert, state: 'PROVISIONING_COMPLETED', reason: null }],
      t3,
      auditEntry(1),
    );
    // SQLite: BEGIN, the upsert, the update, the audit insert, COMMIT
    expect(statementsSent() - sent).toBe(backend === 'postgres' ? 1 : 5);
    expect(await device()).toEqual({
      state_rank: 5,
      state_at: t3.toISOString(),
      last_connection: t3.toISOString(),
    });
    expect((await auditRows()).at(-1)?.correlation_id).toBe('c-6');
  });

  it('refuses a device whose removal commits while the write waits for its row', async () => {
    const before = await device();
    const stored = await objectStates();
    let write: Promise<unknown> | undefined;
    try {
      await db()
        .transaction()
        .execute(async (trx) => {
          await trx
            .updateTable('devices')
            .set({ deleted_at: new Date().toISOString() })
            .where('id', '=', session.device.rowId)
            .execute();
          // PostgreSQL: on another connection, blocked on the device's row until the removal
          // commits; SQLite: its one connection is this transaction's until then
          write = recordDeviceStatesAlone(
            db(),
            session,
            [{ secureObjectId: objects.keypair, state: 'GENERATION_FAILED', reason: 'z' }],
            new Date(),
            auditEntry(1),
          ).then(
            () => 'written',
            (e: unknown) => e,
          );
          if (backend === 'postgres') await untilWaitingOnALock(db());
        });
      expect(String(await write)).toMatch(/device 1234 was removed from factory states's allow-list/);
      expect(await device()).toEqual(before);
      expect(await objectStates()).toEqual(stored);
      expect((await auditRows()).at(-1)?.correlation_id).toBe('c-6');
    } finally {
      await write;
      await db()
        .updateTable('devices')
        .set({ deleted_at: null })
        .where('id', '=', session.device.rowId)
        .execute();
    }
  });

  it('refuses a device removed meanwhile: no state, no connection, no audit row', async () => {
    const before = await device();
    await db()
      .updateTable('devices')
      .set({ deleted_at: new Date().toISOString() })
      .where('id', '=', session.device.rowId)
      .execute();
    try {
      const inTransaction = (changes: StateChange[]) =>
        db()
          .transaction()
          .execute((trx) =>
            recordDeviceStates(trx, session, changes, new Date(), auditEntry(changes.length)),
          );
      // on PostgreSQL one statement with no transaction around it: it must write nothing itself
      const alone = (changes: StateChange[]) =>
        recordDeviceStatesAlone(db(), session, changes, new Date(), auditEntry(changes.length));
      for (const record of [inTransaction, alone]) {
        for (const changes of [
          [{ secureObjectId: objects.cert, state: 'PROVISIONING_FAILED' as const, reason: 'x' }],
          [
            { secureObjectId: objects.keypair, state: 'GENERATION_FAILED' as const, reason: 'y' },
            { secureObjectId: objects.cert, state: 'PROVISIONING_FAILED' as const, reason: 'x' },
          ],
          [],
        ]) {
          await expect(record(changes)).rejects.toThrow(
            /device 1234 was removed from factory states's allow-list/,
          );
        }
      }
      expect(await device()).toEqual(before);
      const rows = await objectStates();
      expect(rows.map((r) => r.state)).toEqual(['PROVISIONING_COMPLETED', 'PROVISIONING_COMPLETED']);
      expect((await auditRows()).map((r) => r.correlation_id)).toEqual([
        'c-1',
        'c-2',
        'c-3',
        'c-4',
        'c-5',
        'c-6',
      ]);
    } finally {
      await db()
        .updateTable('devices')
        .set({ deleted_at: null })
        .where('id', '=', session.device.rowId)
        .execute();
    }
  });
});

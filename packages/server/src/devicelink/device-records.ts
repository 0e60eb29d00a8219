import { KeyferryError } from '@keyferry/core';
import { type Insertable, type OnConflictBuilder, type QueryCreator, sql, type UpdateObject } from 'kysely';
import { rankAfterWrite, refreshDeviceState } from '../allowlist/device-state.ts';
import { type AuditEntry, auditRow, recordAudit } from '../audit/audit-log.ts';
import type { AssignedObject } from '../el2g/assigned-objects.ts';
import { compiledOnce } from '../storage/compiled-query.ts';
import { asOneWrite, type Db, onPostgres } from '../storage/database.ts';
import type { CertificatesTable, DevicesTable, ProvisioningState, Tables } from '../storage/tables.ts';
import type { DeviceSession } from './session.ts';

export type { AssignedObject };

/** An allow-listed device (its active row) with its group. */
export interface DeviceRecord {
  rowId: number;
  deviceId: string;
  nc12: string;
  groupId: number;
  groupName: string;
}

const activeDevice = compiledOnce((db, [factoryId, deviceId]: [number, string]) =>
  db
    .selectFrom('devices')
    .innerJoin('device_groups', 'device_groups.id', 'devices.group_id')
    .select(['devices.id', 'devices.device_id', 'devices.nc12', 'devices.group_id', 'device_groups.name'])
    .where('devices.factory_id', '=', factoryId)
    .where('devices.device_id', '=', deviceId)
    .where('devices.deleted_at', 'is', null),
);

/** The device's active allow-list row in this factory, or undefined. */
export async function findActiveDevice(
  db: Db,
  factoryId: number,
  deviceId: string,
): Promise<DeviceRecord | undefined> {
  const row = (await activeDevice(db, factoryId, deviceId)).rows[0];
  return row
    ? { rowId: row.id, deviceId: row.device_id, nc12: row.nc12, groupId: row.group_id, groupName: row.name }
    : undefined;
}

/** Rows per upsert statement (5 parameters each, within compiledOnce's slots). */
const UPSERT_ROWS = 12;

/** An upsert's answer to a row the device already has for the object: the new state replaces it. */
function replaceState(oc: OnConflictBuilder<Tables, 'device_objects'>) {
  return oc.columns(['device_row_id', 'secure_object_id']).doUpdateSet((eb) => ({
    state: eb.ref('excluded.state'),
    reason: eb.ref('excluded.reason'),
    updated_at: eb.ref('excluded.updated_at'),
  }));
}

/** An upsert of `rows` object states, their values from `params` (5 each). */
function upsertStates(db: Db, rows: number, params: unknown[]) {
  return db
    .insertInto('device_objects')
    .values(
      Array.from({ length: rows }, (_, r) => ({
        device_row_id: params[r * 5] as number,
        secure_object_id: params[r * 5 + 1] as number,
        state: params[r * 5 + 2] as ProvisioningState,
        reason: params[r * 5 + 3] as string | null,
        updated_at: params[r * 5 + 4] as string,
      })),
    )
    .onConflict(replaceState);
}

/** One upsert of `rows` object states (compiled once per row count). */
const upsertObjectStates = Array.from({ length: UPSERT_ROWS }, (_, i) =>
  compiledOnce((db, params: unknown[]) => upsertStates(db, i + 1, params)),
);

/** The columns of `v`, a PostgreSQL statement's new object states (stateValues). */
const V = 'v(device_row_id, secure_object_id, state, reason, updated_at)';

/**
 * PostgreSQL: `rows` object states as a VALUES list, the CTE `v` of the statements below;
 * parameters in a VALUES list are text to PostgreSQL, so the two ids are cast.
 */
function stateValues(rows: number, params: unknown[]) {
  const row = (r: number) =>
    sql`(CAST(${params[r * 5]} AS integer), CAST(${params[r * 5 + 1]} AS integer), ${params[r * 5 + 2]}, ${params[r * 5 + 3]}, ${params[r * 5 + 4]})`;
  return sql<{
    device_row_id: number;
    secure_object_id: number;
    state: ProvisioningState;
    reason: string | null;
    updated_at: string;
  }>`(VALUES ${sql.join(Array.from({ length: rows }, (_, r) => row(r)))})`;
}

type WithValues = QueryCreator<Tables & { v: Tables['device_objects'] } & { touched: { id: number } }>;

/** PostgreSQL: the upsert of `v`'s rows; with `gated`, only when the CTE `touched` updated the device. */
function upsertFromValues(qc: WithValues, gated: boolean) {
  return qc
    .insertInto('device_objects')
    .columns(['device_row_id', 'secure_object_id', 'state', 'reason', 'updated_at'])
    .expression((eb) => {
      const all = eb
        .selectFrom('v')
        .select(['device_row_id', 'secure_object_id', 'state', 'reason', 'updated_at']);
      return gated ? all.where((w) => w.exists(w.selectFrom('touched').select('touched.id'))) : all;
    })
    .onConflict(replaceState);
}

/**
 * PostgreSQL: the upsert of `rows` states and the device's state recomputed in one statement,
 * one round trip instead of two (a device-link request's own write, which also records the
 * connection and its audit row, is writeAndAudit). Parameters: the rows' values, then the
 * time, then the device's row id.
 */
const writeAndRank = Array.from({ length: UPSERT_ROWS }, (_, i) =>
  compiledOnce((db, params: unknown[]) => {
    const at = params[(i + 1) * 5] as string;
    return db
      .with(V, () => stateValues(i + 1, params))
      .with('written', (qc) => upsertFromValues(qc as unknown as WithValues, false))
      .updateTable('devices')
      .set({ state_rank: rankAfterWrite(), state_at: at })
      .where('id', '=', params[(i + 1) * 5 + 1] as number);
  }),
);

/** The audit row's values after the time, in auditRow's order: factory, actor, action, object, detail, correlation id. */
const AUDIT_VALUES = 6;

type Touched = QueryCreator<Tables & { touched: { id: number } }>;

/**
 * The device's row updated with `set` unless it was deleted, its id returned (the `touched` CTE);
 * for an enrollment (`counted`, EnrollmentWrite) only while its enrollment_count is still the
 * one the enrollment read, which it then counts up.
 */
function touchActive(
  qc: QueryCreator<Tables>,
  rowId: number,
  set: UpdateObject<Tables, 'devices'>,
  counted?: { seen: unknown },
) {
  const touch = qc
    .updateTable('devices')
    .set(counted ? { ...set, enrollment_count: sql<number>`enrollment_count + 1` } : set)
    .where('id', '=', rowId)
    .where('deleted_at', 'is', null);
  return (counted ? touch.where('enrollment_count', '=', counted.seen as number) : touch).returning('id');
}

/**
 * What an enrollment writes beside the states and its audit row: the certificate it `issued`
 * (none when it answers with one the device has), and the device's enrollment_count it read
 * (migration 019). On PostgreSQL the write is made only while the count is still that one;
 * otherwise nothing is written and EnrollmentRaced is thrown.
 */
export interface EnrollmentWrite {
  issued?: IssuedCertificate;
  count: number;
}

/**
 * PostgreSQL: another enrollment of the device was written between this one's read and its
 * write (or the device was deleted); nothing of this one was written. The caller reads again.
 */
export class EnrollmentRaced extends Error {
  constructor() {
    super("the device enrolled again between this enrollment's read and its write");
  }
}

const countEnrollment = compiledOnce((db, [rowId, seen]: [number, number]) =>
  db
    .updateTable('devices')
    .set({ enrollment_count: sql<number>`enrollment_count + 1` })
    .where('id', '=', rowId)
    .where('deleted_at', 'is', null)
    .where('enrollment_count', '=', seen),
);

/** The request's audit row, selected from `touched` (the device's row, when it was updated). */
function auditFromTouched(qc: Touched, at: unknown, a: unknown[]) {
  return qc
    .insertInto('audit_log')
    .columns(['at', 'factory_id', 'actor', 'action', 'object', 'detail', 'correlation_id'])
    .expression((eb) =>
      eb.selectFrom('touched').select([
        sql<string>`${at}`.as('at'),
        // a parameter in a select list is text to PostgreSQL; factory_id is the one integer
        sql<number | null>`CAST(${a[0]} AS integer)`.as('factory_id'),
        sql<string>`${a[1]}`.as('actor'),
        sql<string>`${a[2]}`.as('action'),
        sql<string>`${a[3]}`.as('object'),
        sql<string>`${a[4]}`.as('detail'),
        sql<string>`${a[5]}`.as('correlation_id'),
      ]),
    );
}

/** The columns of a device certificate's row, in the order of its values in the statements below. */
const CERTIFICATE_COLUMNS = [
  'factory_id',
  'device_row_id',
  'secure_object_id',
  'ca_id',
  'serial_hex',
  'public_key_sha256',
  'subject_cn',
  'pem',
  'not_before',
  'not_after',
  'issued_at',
  'revoked_at',
  'revocation_reason',
] as const satisfies readonly (keyof Insertable<CertificatesTable>)[];
/** The integer columns: a parameter in a select list is text to PostgreSQL, so these are cast. */
const INTEGER_COLUMNS: ReadonlySet<string> = new Set([
  'factory_id',
  'device_row_id',
  'secure_object_id',
  'ca_id',
]);

export type IssuedCertificate = Insertable<CertificatesTable>;

const certificateInsert = compiledOnce((db, values: unknown[]) =>
  db
    .insertInto('certificates')
    .values(Object.fromEntries(CERTIFICATE_COLUMNS.map((c, i) => [c, values[i]])) as IssuedCertificate),
);

/** PostgreSQL: the certificate's row, selected from `touched` (inserted only when the device's row was updated). */
function certificateFromTouched(qc: Touched, values: unknown[]) {
  return qc
    .insertInto('certificates')
    .columns(CERTIFICATE_COLUMNS)
    .expression((eb) =>
      eb
        .selectFrom('touched')
        .select(
          CERTIFICATE_COLUMNS.map((c, i) =>
            (INTEGER_COLUMNS.has(c) ? sql`CAST(${values[i]} AS integer)` : sql`${values[i]}`).as(c),
          ),
        ),
    );
}

/**
 * PostgreSQL: writeAndRank with the request's audit row in the same statement (a device-link
 * request's whole record of itself in one round trip; index = rows, 0 for the connection
 * alone); for an enrollment (`counted`) with the guard of its enrollment_count, and with
 * `issuing` the certificate it issued. The devices row is updated in a CTE, the states upserted,
 * the certificate and the audit row inserted only when that row was: nothing is written when
 * the device was deleted meanwhile (or, counted, another enrollment was written), so the
 * statement is whole on its own (recordDeviceStatesAlone runs it outside a transaction).
 * Parameters: the rows' values, the time, the device's row id, the audit row's AUDIT_VALUES,
 * the certificate's CERTIFICATE_COLUMNS, the enrollment_count read. Affects one row (the audit
 * row's insert), none when nothing was written.
 */
function writeAndAuditStatements(kind: { counted: boolean; issuing: boolean }) {
  return Array.from({ length: UPSERT_ROWS + 1 }, (_, rows) =>
    compiledOnce((db, params: unknown[]) => {
      const at = params[rows * 5] as string;
      const rowId = params[rows * 5 + 1] as number;
      const audit = params.slice(rows * 5 + 2, rows * 5 + 2 + AUDIT_VALUES);
      const afterAudit = rows * 5 + 2 + AUDIT_VALUES;
      const certificate = params.slice(afterAudit, afterAudit + CERTIFICATE_COLUMNS.length);
      const counted = kind.counted
        ? { seen: params[afterAudit + (kind.issuing ? CERTIFICATE_COLUMNS.length : 0)] }
        : undefined;
      // the device's row first: it is locked and judged (deleted or not) before anything else
      // is written, and the other writes run only when it was updated, so the statement needs
      // no transaction around it to leave nothing behind for a removed device
      let touched = (rows === 0
        ? db.with('touched', (qc) => touchActive(qc, rowId, { last_connection: at }, counted))
        : db
            .with(V, () => stateValues(rows, params))
            .with('touched', (qc) =>
              touchActive(
                qc as unknown as QueryCreator<Tables>,
                rowId,
                { state_rank: rankAfterWrite(), state_at: at, last_connection: at },
                counted,
              ),
            )
            .with('written', (qc) =>
              upsertFromValues(qc as unknown as WithValues, true),
            )) as unknown as Touched;
      if (kind.issuing) {
        touched = touched.with('issued', (qc) =>
          certificateFromTouched(qc as unknown as Touched, certificate),
        ) as unknown as Touched;
      }
      return auditFromTouched(touched, at, audit);
    }),
  );
}
const writeAndAudit = writeAndAuditStatements({ counted: false, issuing: false });
const writeEnrollmentAndAudit = writeAndAuditStatements({ counted: true, issuing: false });
const writeIssueAndAudit = writeAndAuditStatements({ counted: true, issuing: true });

export type StateChange = { secureObjectId: number; state: ProvisioningState; reason: string | null };

/** Sets a device's state of one object (insert or update), and the device's own state with it. */
export async function setObjectState(
  db: Db,
  deviceRowId: number,
  secureObjectId: number,
  state: ProvisioningState,
  reason: string | null,
  now: Date,
): Promise<void> {
  await writeStates(db, deviceRowId, [{ secureObjectId, state, reason }], now, { touch: false });
}

/**
 * What a device-link request records in its transaction: several of the device's object
 * states (one statement per twelve, the device's own state recomputed once), its connection
 * (touchDevice), in the same statement as its state when a state changes, its audit row and,
 * for an enrollment, what EnrollmentWrite says. On PostgreSQL all of it is one statement
 * (writeAndAudit, writeEnrollmentAndAudit, writeIssueAndAudit). Refuses
 * `device_not_allowlisted` when the device's row was deleted meanwhile; the caller's
 * transaction then undoes the rest. An enrollment on PostgreSQL throws EnrollmentRaced instead
 * (it reads again, and finds the device gone or the other enrollment).
 */
export async function recordDeviceStates(
  db: Db,
  session: DeviceSession,
  changes: readonly StateChange[],
  now: Date,
  audit: AuditEntry,
  enrollment?: EnrollmentWrite,
): Promise<void> {
  const rows = oneRowPerObject(changes);
  const issued = enrollment?.issued;
  if (inOneStatement(db, rows.length)) {
    const at = now.toISOString();
    const a = auditRow(audit, at);
    const statements = issued ? writeIssueAndAudit : enrollment ? writeEnrollmentAndAudit : writeAndAudit;
    const result = await statements[rows.length]!(
      db,
      ...rows.flatMap((c) => [session.device.rowId, c.secureObjectId, c.state, c.reason, at]),
      at,
      session.device.rowId,
      // AUDIT_VALUES of them
      ...[a.factory_id, a.actor, a.action, a.object, a.detail, a.correlation_id],
      ...(issued ? CERTIFICATE_COLUMNS.map((c) => issued[c]) : []),
      ...(enrollment ? [enrollment.count] : []),
    );
    if (Number(result.numAffectedRows) !== 1)
      throw enrollment ? new EnrollmentRaced() : notAllowListed(session);
    return;
  }
  // SQLite's enrollment transaction is serialised by BEGIN IMMEDIATE; PostgreSQL's is not
  if (enrollment && onPostgres(db)) {
    const counted = await countEnrollment(db, session.device.rowId, enrollment.count);
    if (Number(counted.numAffectedRows) !== 1) throw new EnrollmentRaced();
  }
  if (issued) await certificateInsert(db, ...CERTIFICATE_COLUMNS.map((c) => issued[c]));
  if (!(await writeStates(db, session.device.rowId, rows, now, { touch: true })))
    throw notAllowListed(session);
  await recordAudit(db, audit, now);
}

/**
 * recordDeviceStates whole by itself: in the caller's transaction when there is one; on
 * PostgreSQL (up to UPSERT_ROWS objects) one statement that writes all or nothing, without
 * BEGIN and COMMIT (two round trips fewer: the manifest's connection record, an enrollment, a
 * report); otherwise in a transaction of its own.
 */
export async function recordDeviceStatesAlone(
  ...[db, session, changes, now, audit, enrollment]: Parameters<typeof recordDeviceStates>
): Promise<void> {
  if (inOneStatement(db, oneRowPerObject(changes).length))
    return recordDeviceStates(db, session, changes, now, audit, enrollment);
  await asOneWrite(db, (trx) => recordDeviceStates(trx, session, changes, now, audit, enrollment));
}

/** Whether a write of `rows` object states is one statement here (writeAndRank, writeAndAudit). */
function inOneStatement(db: Db, rows: number): boolean {
  return rows <= UPSERT_ROWS && onPostgres(db);
}

/** One change per object, the last one winning (PostgreSQL refuses a key twice in one upsert). */
function oneRowPerObject(changes: readonly StateChange[]): StateChange[] {
  return [...new Map(changes.map((c) => [c.secureObjectId, c])).values()];
}

/** The device left the allow-list while its request ran. */
export function notAllowListed(session: DeviceSession): KeyferryError {
  return new KeyferryError(
    'device_not_allowlisted',
    `device ${session.device.deviceId} was removed from factory ${session.factory.name}'s allow-list`,
  );
}

/** The states written; with `touch`, false when the device's row was deleted meanwhile. */
async function writeStates(
  db: Db,
  deviceRowId: number,
  changes: readonly StateChange[],
  now: Date,
  options: { touch: boolean },
): Promise<boolean> {
  if (changes.length === 0) return options.touch ? touchDevice(db, deviceRowId, now) : true;
  const at = now.toISOString();
  const rows = oneRowPerObject(changes);
  // a request's own write (touch) is writeAndAudit's on PostgreSQL, unless it has more rows
  if (!options.touch && inOneStatement(db, rows.length)) {
    const values = rows.flatMap((c) => [deviceRowId, c.secureObjectId, c.state, c.reason, at]);
    await writeAndRank[rows.length - 1]!(db, ...values, at, deviceRowId);
    return true;
  }
  for (let i = 0; i < rows.length; i += UPSERT_ROWS) {
    const chunk = rows.slice(i, i + UPSERT_ROWS);
    await upsertObjectStates[chunk.length - 1]!(
      db,
      ...chunk.flatMap((c) => [deviceRowId, c.secureObjectId, c.state, c.reason, at]),
    );
  }
  return refreshDeviceState(db, deviceRowId, now, options);
}

const touchRow = compiledOnce((db, [at, rowId]: [string, number]) =>
  db
    .updateTable('devices')
    .set({ last_connection: at } satisfies Partial<DevicesTable>)
    .where('id', '=', rowId)
    .where('deleted_at', 'is', null),
);

/**
 * Records the device's connection; false when its row was deleted meanwhile (the allow-list
 * changed under a running request), so the caller refuses instead of issuing.
 */
export async function touchDevice(db: Db, rowId: number, now: Date): Promise<boolean> {
  const result = await touchRow(db, now.toISOString(), rowId);
  return Number(result.numAffectedRows) === 1;
}

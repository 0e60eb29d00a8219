import { buildCrl, fromPem, KeyferryError, type RevocationReason, type RevokedEntry } from '@keyferry/core';
import { custodySignerById, type KeyCustody } from '../keys/custody.ts';
import type { Db } from '../storage/database.ts';
import type { CrlsTable } from '../storage/gateway-tables.ts';

/** A CRL is valid this long; it is rebuilt when a revocation happens or a day before it runs out. */
export const CRL_VALIDITY_MS = 7 * 24 * 3600 * 1000;
export const CRL_RENEW_BEFORE_MS = 24 * 3600 * 1000;

/** How long a signed CRL is valid and how long before its nextUpdate it is re-signed (config `crl`). */
export interface CrlTiming {
  validityMs: number;
  renewBeforeMs: number;
}

let timing: CrlTiming = { validityMs: CRL_VALIDITY_MS, renewBeforeMs: CRL_RENEW_BEFORE_MS };

/**
 * Sets the CRL timing of this process (keyferryd calls it once at start from config `crl`):
 * every path that signs a CRL (revocation, a read, the re-sign timer) uses the same values.
 */
export function setCrlTiming(next: CrlTiming): void {
  if (next.renewBeforeMs >= next.validityMs) {
    throw new KeyferryError(
      'config_invalid',
      'crl.renewBefore must be shorter than crl.validity, or every CRL would be re-signed on every read',
    );
  }
  timing = { ...next };
}

/** The CRL timing in force. */
export function crlTiming(): CrlTiming {
  return timing;
}

/** What building a CRL needs: the database and the custody holding the CA keys. */
export interface RevocationDeps {
  db: Db;
  custody: KeyCustody;
}

/** The current signed CRL of one intermediate CA. */
export interface CurrentCrl {
  caId: number;
  crlNumber: number;
  thisUpdate: Date;
  nextUpdate: Date;
  der: Uint8Array;
}

/**
 * The CA's CRL as stored, rebuilt first when it is missing, near its nextUpdate, or no longer
 * matches the CA's revoked certificates (count and latest revocation time). The check makes
 * every revocation visible even when the code that revoked did not call
 * {@link onCertificatesRevoked}; that call only makes the rebuild happen at once.
 */
export async function currentCrl(deps: RevocationDeps, caId: number, now = new Date()): Promise<CurrentCrl> {
  const asked = ++sequence;
  const [stored, state] = await Promise.all([storedCrl(deps.db, caId), revokedState(deps.db, caId)]);
  if (stored && !stale(stored, state, now)) return toCurrent(stored);
  return sharedRebuild(deps, caId, now, asked);
}

/** Orders the state reads and rebuilds of this process. */
let sequence = 0;
/**
 * Per database, each CA's latest rebuild in this process (in flight or done) and when (in
 * {@link sequence}) it began.
 */
const rebuilds = new WeakMap<Db, Map<number, Rebuild>>();

interface Rebuild {
  began: number;
  crl: Promise<CurrentCrl>;
  done: boolean;
}

/**
 * Callers of one process that find a CRL stale at once share one signing: many CRL reads
 * right after a revocation would otherwise each read and sign the whole list. A caller takes
 * the latest rebuild, in flight or done, when it began after the caller read the revocation
 * state, so it lists at least those revocations (a caller whose reads were answered late, after
 * that rebuild ended, finds the CRL it read stale but need not sign again); otherwise the
 * caller waits for it to end, then takes or begins the next.
 */
async function sharedRebuild(
  deps: RevocationDeps,
  caId: number,
  now: Date,
  asked: number,
): Promise<CurrentCrl> {
  const latest = rebuilds.get(deps.db) ?? new Map<number, Rebuild>();
  rebuilds.set(deps.db, latest);
  for (let flight = latest.get(caId); flight; flight = latest.get(caId)) {
    if (flight.began > asked) return flight.crl;
    if (flight.done) break;
    await flight.crl.catch(() => undefined);
  }
  const rebuild: Rebuild = { began: ++sequence, crl: rebuildCrl(deps, caId, now), done: false };
  latest.set(caId, rebuild);
  rebuild.crl.then(
    () => {
      rebuild.done = true;
    },
    () => {
      rebuild.done = true;
      // a failed signing is not shared with anyone who comes later
      if (latest.get(caId) === rebuild) latest.delete(caId);
    },
  );
  return rebuild.crl;
}

/**
 * Call after revoking certificates of CA `caId` (allow-list delete, rotation; revocation/
 * refresh.ts): re-signs its CRL with the next CRL number so the served revocation data is
 * current.
 */
export async function onCertificatesRevoked(
  deps: RevocationDeps,
  caId: number,
  now = new Date(),
): Promise<CurrentCrl> {
  return currentCrl(deps, caId, now);
}

/** Maps keyferry's stored revocation reasons onto RFC 5280 reason codes. */
export function crlReason(reason: string | null): RevocationReason | undefined {
  if (reason === null) return undefined;
  if (/supersed/i.test(reason)) return 'superseded';
  if (/allow-list|deleted/i.test(reason)) return 'cessationOfOperation';
  if (/compromise/i.test(reason)) return 'keyCompromise';
  return undefined;
}

interface RevokedState {
  count: number;
  latest: string | null;
}

async function revokedState(db: Db, caId: number): Promise<RevokedState> {
  const row = await db
    .selectFrom('certificates')
    .select((eb) => [eb.fn.countAll().as('n'), eb.fn.max('revoked_at').as('latest')])
    .where('ca_id', '=', caId)
    .where('revoked_at', 'is not', null)
    .executeTakeFirst();
  return { count: Number(row?.n ?? 0), latest: (row?.latest as string | null | undefined) ?? null };
}

function storedCrl(db: Db, caId: number): Promise<CrlsTable | undefined> {
  return db.selectFrom('crls').selectAll().where('ca_id', '=', caId).executeTakeFirst();
}

function stale(stored: CrlsTable, state: RevokedState, now: Date): boolean {
  if (stored.revoked_count !== state.count || stored.revoked_latest !== state.latest) return true;
  return Date.parse(stored.next_update) - now.getTime() < timing.renewBeforeMs;
}

/**
 * Signs a new CRL with the next CRL number. Two processes rebuilding at once both sign, but
 * only the one whose update finds the number it read wins; the other reads the winner's.
 */
async function rebuildCrl(deps: RevocationDeps, caId: number, now: Date): Promise<CurrentCrl> {
  const { db } = deps;
  for (let attempt = 0; attempt < 3; attempt++) {
    const ca = await db
      .selectFrom('intermediate_cas')
      .select(['id', 'key_ref', 'certificate'])
      .where('id', '=', caId)
      .executeTakeFirst();
    if (!ca) throw new KeyferryError('not_found', `no intermediate CA ${caId}`);
    const previous = await storedCrl(db, caId);
    const revoked = await db
      .selectFrom('certificates')
      .select(['serial_hex', 'revoked_at', 'revocation_reason', 'not_after'])
      .where('ca_id', '=', caId)
      .where('revoked_at', 'is not', null)
      .orderBy('id')
      .execute();
    const listedBefore = previous ? listedOnCrlAfterExpiry(previous.this_update) : () => false;
    const entries: RevokedEntry[] = [];
    for (const r of revoked) {
      if (listedBefore(r)) continue;
      const reason = crlReason(r.revocation_reason);
      entries.push({
        serialHex: r.serial_hex,
        revokedAt: new Date(r.revoked_at!),
        ...(reason ? { reason } : {}),
      });
    }
    const crlNumber = (previous?.crl_number ?? 0) + 1;
    const nextUpdate = new Date(now.getTime() + timing.validityMs);
    const der = await buildCrl({
      issuerCert: fromPem(ca.certificate, 'CERTIFICATE'),
      signer: await custodySignerById(db, deps.custody, ca.key_ref),
      revoked: entries,
      thisUpdate: now,
      nextUpdate,
      crlNumber,
    });
    const latest = revoked.reduce<string | null>(
      (max, r) => (max === null || r.revoked_at! > max ? r.revoked_at! : max),
      null,
    );
    const row: CrlsTable = {
      ca_id: caId,
      crl_number: crlNumber,
      this_update: now.toISOString(),
      next_update: nextUpdate.toISOString(),
      revoked_count: revoked.length,
      revoked_latest: latest,
      der: Buffer.from(der).toString('base64'),
    };
    const won = previous
      ? Number(
          (
            await db
              .updateTable('crls')
              .set(row)
              .where('ca_id', '=', caId)
              .where('crl_number', '=', previous.crl_number)
              .executeTakeFirst()
          ).numUpdatedRows,
        ) === 1
      : await db
          .insertInto('crls')
          .values(row)
          .onConflict((oc) => oc.column('ca_id').doNothing())
          .executeTakeFirst()
          .then((r) => Number(r.numInsertedOrUpdatedRows ?? 0n) === 1);
    if (won) return toCurrent(row);
    const theirs = await storedCrl(db, caId);
    if (
      theirs &&
      theirs.revoked_count === row.revoked_count &&
      theirs.revoked_latest === row.revoked_latest
    ) {
      return toCurrent(theirs);
    }
  }
  throw new KeyferryError(
    'unavailable',
    `the CRL of CA ${caId} keeps changing under concurrent rebuilds; retry`,
  );
}

/**
 * A revoked certificate whose validity ended is dropped from its CA's CRL once a CRL issued
 * after it expired has listed it (RFC 5280 §3.3): a fleet that renews for years keeps a CRL of
 * the certificates still valid, not of every one it ever replaced. The previous CRL (signed at
 * `previousThisUpdate`) listed an entry that was revoked before it was signed, so an entry
 * expired before then and revoked well before then — an hour, beyond any transaction and any
 * clock skew between nodes — was on a CRL issued after its expiry. The revoked row itself
 * stays: the gateway refuses the certificate as revoked, and the CRL's staleness check still
 * counts every revoked row, so an expiry alone does not re-sign a CRL; the entry goes at the
 * CA's next re-sign, for a revocation or a day before nextUpdate.
 */
function listedOnCrlAfterExpiry(previousThisUpdate: string) {
  const signedAt = Date.parse(previousThisUpdate);
  return (r: { revoked_at: string | null; not_after: string }) =>
    Date.parse(r.not_after) < signedAt && Date.parse(r.revoked_at!) < signedAt - REVOCATION_SETTLED_MS;
}

/** How long after its revoked_at a revocation is surely committed and seen by every node. */
const REVOCATION_SETTLED_MS = 3600 * 1000;

function toCurrent(row: CrlsTable): CurrentCrl {
  return {
    caId: row.ca_id,
    crlNumber: row.crl_number,
    thisUpdate: new Date(row.this_update),
    nextUpdate: new Date(row.next_update),
    der: new Uint8Array(Buffer.from(row.der, 'base64')),
  };
}

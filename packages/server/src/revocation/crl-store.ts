import { setImmediate as nextTurn } from 'node:timers/promises';
import {
  buildCrl,
  type EncodedRevokedEntries,
  fromPem,
  KeyferryError,
  type RevocationReason,
  type RevokedEntry,
  revokedEntriesDer,
} from '@keyferry/core';
import { sql } from 'kysely';
import { custodySignerById, type KeyCustody } from '../keys/custody.ts';
import { type Db, threadReaderOf } from '../storage/database.ts';
import type { CrlsTable } from '../storage/gateway-tables.ts';
import { CRL_LISTED_UNTIL } from '../storage/migrations/017-crl-revocation-version.ts';

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

/** Which signed CRL of one intermediate CA is current, without the CRL itself. */
export interface CrlHead {
  caId: number;
  crlNumber: number;
  thisUpdate: Date;
  nextUpdate: Date;
}

/** The current signed CRL of one intermediate CA. */
export interface CurrentCrl extends CrlHead {
  der: Uint8Array;
}

/**
 * The CA's CRL as stored, rebuilt first when it is missing, near its nextUpdate, or signed
 * before the CA's latest revocation change (its revocation version, which the triggers on
 * `certificates` count: migration 017). The check makes every revocation visible, on every
 * node, even when the code that revoked did not call {@link onCertificatesRevoked}; that call
 * only makes the rebuild happen at once. It reads at most REVOCATION_SHARDS rows, however many
 * certificates the CA revoked.
 */
export async function currentCrl(deps: RevocationDeps, caId: number, now = new Date()): Promise<CurrentCrl> {
  return crlNamed(deps.db, await currentCrlHead(deps, caId, now));
}

/**
 * {@link currentCrl} without the CRL itself when the stored one is current: what a relying
 * party's conditional fetch needs to be answered 304. A CA's CRL at 60,000 entries is ~2 MB,
 * ~3 MB as stored, which a 304 would otherwise read and decode for nothing.
 */
export async function currentCrlHead(deps: RevocationDeps, caId: number, now = new Date()): Promise<CrlHead> {
  const asked = ++sequence;
  const [stored, version] = await Promise.all([storedHead(deps.db, caId), revocationVersion(deps.db, caId)]);
  if (stored && !stale(stored, version, now)) return toHead(stored);
  return sharedRebuild(deps, caId, now, asked, version);
}

/**
 * The signed CRL `head` names (from {@link currentCrlHead}): the one this process signed or
 * read last when it is that one, else the stored one, which is only ever replaced by a newer,
 * as current as `head`.
 */
export async function crlNamed(db: Db, head: CrlHead): Promise<CurrentCrl> {
  const crls = latestCrls.get(db);
  const known = crls?.get(head.caId);
  if (crls && known && sameCrl(known, head)) {
    // the most recently sent last: a Map iterates in insertion order
    crls.delete(head.caId);
    crls.set(head.caId, known);
    return known;
  }
  const stored = await storedCrl(db, head.caId);
  if (!stored) throw new KeyferryError('not_found', `no CRL of intermediate CA ${head.caId}`);
  return remember(db, toCurrent(stored));
}

/**
 * Per database, the latest CRL of each CA this process signed or read whole: sent again while
 * the stored CRL is the same one (CRL number and signing time), not read and decoded again for
 * every fetch, and one copy in memory however many relying parties fetch it at once. At most
 * {@link crlHeldBytes} of them: the CRLs sent least recently go first (~2 MB a CA at 60,000
 * entries, so a deployment of many large CAs would otherwise hold them all).
 */
const latestCrls = new WeakMap<Db, Map<number, CurrentCrl>>();

/** Bytes of signed CRLs each process keeps to send again, per database: config `crl.heldBytes`. */
export const CRL_HELD_BYTES = 32 * 1024 * 1024;
let heldBytes = CRL_HELD_BYTES;

/** Sets {@link CRL_HELD_BYTES} for this process (keyferryd calls it once at start, from config `crl`). */
export function setCrlHeldBytes(bytes: number): void {
  heldBytes = bytes;
}

/** The bytes of signed CRLs this process keeps, per database. */
export function crlHeldBytes(): number {
  return heldBytes;
}

function remember(db: Db, crl: CurrentCrl): CurrentCrl {
  const crls = latestCrls.get(db) ?? new Map<number, CurrentCrl>();
  latestCrls.set(db, crls);
  crls.delete(crl.caId);
  if (crl.der.length > heldBytes) return crl;
  crls.set(crl.caId, crl);
  let held = 0;
  for (const kept of crls.values()) held += kept.der.length;
  for (const [caId, kept] of crls) {
    if (held <= heldBytes) break;
    crls.delete(caId);
    held -= kept.der.length;
  }
  return crl;
}

function sameCrl(a: CrlHead, b: CrlHead): boolean {
  return a.crlNumber === b.crlNumber && a.thisUpdate.getTime() === b.thisUpdate.getTime();
}

/** Orders the state reads and rebuilds of this process. */
let sequence = 0;
/**
 * Per database, each CA's latest rebuild in this process (in flight or done) and when (in
 * {@link sequence}) it began. A rebuild keeps only the head of the CRL it signed: the signed
 * CRL itself is held by {@link remember} alone, within {@link crlHeldBytes}.
 */
const rebuilds = new WeakMap<Db, Map<number, Rebuild>>();

interface Rebuild {
  began: number;
  head: Promise<CrlHead>;
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
  version: number,
): Promise<CrlHead> {
  const latest = rebuilds.get(deps.db) ?? new Map<number, Rebuild>();
  rebuilds.set(deps.db, latest);
  for (let flight = latest.get(caId); flight; flight = latest.get(caId)) {
    if (flight.began > asked) return flight.head;
    if (flight.done) break;
    await flight.head.catch(() => undefined);
  }
  const head = rebuildCrl(deps, caId, now, version).then(toHeadOf);
  const rebuild: Rebuild = { began: ++sequence, head, done: false };
  latest.set(caId, rebuild);
  rebuild.head.then(
    () => {
      rebuild.done = true;
    },
    () => {
      rebuild.done = true;
      // a failed signing is not shared with anyone who comes later
      if (latest.get(caId) === rebuild) latest.delete(caId);
    },
  );
  return rebuild.head;
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

/**
 * The CA's revocation version: the sum of its counters, which every change to its revoked
 * certificates increments in the changing transaction (migration 017's triggers). It only
 * grows, and a change becomes visible with the rows it changed, so a CRL signed from rows read
 * after the version was read lists at least the changes that version counts.
 */
export async function revocationVersion(db: Db, caId: number): Promise<number> {
  const row = await db
    .selectFrom('ca_revocation_versions')
    .select((eb) => eb.fn.sum<number | string>('version').as('v'))
    .where('ca_id', '=', caId)
    .executeTakeFirst();
  // PostgreSQL's sum of integers is a bigint, which node-postgres hands over as a string
  return Number(row?.v ?? 0);
}

function storedCrl(db: Db, caId: number): Promise<CrlsTable | undefined> {
  return db.selectFrom('crls').selectAll().where('ca_id', '=', caId).executeTakeFirst();
}

/** What of a stored CRL tells whether it is current and which it is: every column but the CRL. */
type StoredHead = Omit<CrlsTable, 'der'>;

function storedHead(db: Db, caId: number): Promise<StoredHead | undefined> {
  return db
    .selectFrom('crls')
    .select([
      'ca_id',
      'crl_number',
      'this_update',
      'next_update',
      'revoked_count',
      'revoked_latest',
      'revocation_version',
    ])
    .where('ca_id', '=', caId)
    .executeTakeFirst();
}

function stale(stored: StoredHead, version: number, now: Date): boolean {
  if (stored.revocation_version !== version) return true;
  return Date.parse(stored.next_update) - now.getTime() < timing.renewBeforeMs;
}

/**
 * Signs a new CRL with the next CRL number, listing at least the revocations counted by
 * `readVersion`, the CA's revocation version read before this call. Two processes rebuilding
 * at once both sign, but only the one whose update finds the number it read wins; the other
 * takes the winner's when it is as current, or reads the version again and signs again.
 */
async function rebuildCrl(
  deps: RevocationDeps,
  caId: number,
  now: Date,
  readVersion: number,
): Promise<CurrentCrl> {
  const { db } = deps;
  // read before the rows: a change committed in between is listed now and makes the CRL stale
  // once more, never missed
  let version = readVersion;
  for (let attempt = 0; attempt < 3; attempt++) {
    if (attempt > 0) version = await revocationVersion(db, caId);
    const ca = await db
      .selectFrom('intermediate_cas')
      .select(['id', 'key_ref', 'certificate'])
      .where('id', '=', caId)
      .executeTakeFirst();
    if (!ca) throw new KeyferryError('not_found', `no intermediate CA ${caId}`);
    const previous = await storedHead(db, caId);
    const revoked = await stillListed(db, caId, previous);
    // requests that came in during the read run before the encoding
    await eventLoopTurn();
    const encoded = await encodeInSlices(revoked);
    const crlNumber = (previous?.crl_number ?? 0) + 1;
    const nextUpdate = new Date(now.getTime() + timing.validityMs);
    const der = await buildCrl({
      issuerCert: fromPem(ca.certificate, 'CERTIFICATE'),
      signer: await custodySignerById(db, deps.custody, ca.key_ref),
      revoked: encoded,
      thisUpdate: now,
      nextUpdate,
      crlNumber,
    });
    // and those that came in during the signing before the write
    await eventLoopTurn();
    // keyferry judges a CRL current by its revocation version; nodes from before migration 017,
    // still running during a rolling upgrade, by its count and latest revocation
    let latest: string | null = null;
    for (let i = 0; i < revoked.count; i++) {
      const at = revoked.revokedAt(i);
      if (latest === null || at > latest) latest = at;
    }
    const row: CrlsTable = {
      ca_id: caId,
      crl_number: crlNumber,
      this_update: now.toISOString(),
      next_update: nextUpdate.toISOString(),
      revoked_count: revoked.count,
      revoked_latest: latest,
      revocation_version: version,
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
    // the CRL just built, not decoded again from what is stored
    if (won) return remember(db, { ...toHead(row), der });
    const theirs = await storedCrl(db, caId);
    if (theirs?.revocation_version != null && theirs.revocation_version >= version)
      return remember(db, toCurrent(theirs));
  }
  throw new KeyferryError(
    'unavailable',
    `the CRL of CA ${caId} keeps changing under concurrent rebuilds; retry`,
  );
}

/** The entries {@link stillListed} read, row `i` of `count`, in revocation order. */
interface Listing {
  count: number;
  serialHex(i: number): string;
  revokedAt(i: number): string;
  reason(i: number): string | null;
}

/**
 * The revoked certificates of CA `caId` its next CRL lists, in revocation order (row id), after
 * its `previous` CRL (none: its first). A
 * revoked certificate whose validity ended is dropped from its CA's CRL once a CRL issued
 * after it expired has listed it (RFC 5280 §3.3): a fleet that renews for years keeps a CRL of
 * the certificates still valid, not of every one it ever replaced. The previous CRL (signed at its
 * `this_update`) listed an entry that was revoked before it was signed, so an entry
 * that expired and was revoked well before then — an hour, beyond any transaction and any
 * clock skew between nodes — was on a CRL issued after its expiry and is left out: the list is
 * the CA's revoked rows whose later of revocation and expiry (CRL_LISTED_UNTIL) is no more than
 * an hour before the previous CRL, one range of the partial index `certificates_ca_crl_until`, so
 * the read is as long as the list, not as the CA's history. The first CRL of a CA lists every
 * revoked certificate. A list as long as THREAD_READ_FROM was last time is read on the thread
 * reader.
 *
 * The revoked rows themselves stay: the gateway refuses the certificates as revoked. An
 * expiry changes no revocation version, so it alone does not re-sign a CRL; the entry goes at
 * the CA's next re-sign, for a revocation or a day before nextUpdate.
 */
async function stillListed(db: Db, caId: number, previous: StoredHead | undefined): Promise<Listing> {
  // the timestamps are all toISOString()'s: as text they sort as the times they name, after ''
  const settled =
    previous === undefined
      ? ''
      : new Date(Date.parse(previous.this_update) - REVOCATION_SETTLED_MS).toISOString();
  const query = db
    .selectFrom('certificates')
    .select(['serial_hex', 'revoked_at', 'revocation_reason'])
    .where('ca_id', '=', caId)
    .where('revoked_at', 'is not', null)
    .where(sql.raw<string>(CRL_LISTED_UNTIL), '>=', settled)
    .orderBy('id');
  // SQLite: a long list off the event loop, which a 60,000-row read would hold ~50 ms
  // (docs/performance.md); on a thread that fails, on the connection after all
  const reader = (previous?.revoked_count ?? 0) >= THREAD_READ_FROM ? threadReaderOf(db) : undefined;
  const read = reader ? await reader.read(query.compile()).catch(() => undefined) : undefined;
  if (read) {
    const serials = read.column('serial_hex');
    const times = read.column('revoked_at');
    const reasons = read.column('revocation_reason');
    return {
      count: read.count,
      serialHex: (i) => serials.at(i) as string,
      revokedAt: (i) => times.at(i) as string,
      reason: (i) => reasons.at(i) as string | null,
    };
  }
  const rows = await query.execute();
  return {
    count: rows.length,
    serialHex: (i) => rows[i]!.serial_hex,
    revokedAt: (i) => rows[i]!.revoked_at!,
    reason: (i) => rows[i]!.revocation_reason,
  };
}

/**
 * A CA whose previous CRL listed this many entries has its next listing read on the thread
 * reader (SQLite): shorter reads take a few milliseconds at most, less than the hop to the
 * thread is worth, and a deployment of small CRLs never starts the thread.
 */
export const THREAD_READ_FROM = 2000;

/** Entries a re-sign encodes between two turns of the event loop (~3 ms of CPU here). */
const ENCODE_SLICE = 5000;

/**
 * The listed entries, encoded ENCODE_SLICE at a time with a turn of the event loop in
 * between: a re-sign of a 60,000-entry CRL encoded them in one go, ~40 ms during which no
 * device request was served (docs/performance.md). Each reason text is mapped once.
 */
async function encodeInSlices(listing: Listing): Promise<EncodedRevokedEntries> {
  const reasons = new Map<string | null, RevocationReason | undefined>();
  const encodedEntries: Uint8Array[] = [];
  for (let from = 0; from < listing.count; from += ENCODE_SLICE) {
    if (from > 0) await eventLoopTurn();
    const entries: RevokedEntry[] = new Array(Math.min(ENCODE_SLICE, listing.count - from));
    for (let k = 0; k < entries.length; k++) {
      const i = from + k;
      const text = listing.reason(i);
      let reason = reasons.get(text);
      if (reason === undefined && !reasons.has(text)) {
        reason = crlReason(text);
        reasons.set(text, reason);
      }
      entries[k] = { serialHex: listing.serialHex(i), revokedAt: new Date(listing.revokedAt(i)), reason };
    }
    encodedEntries.push(revokedEntriesDer(entries));
  }
  return { encodedEntries };
}

/**
 * Lets the event loop poll for I/O once, so requests that arrived meanwhile run: a setImmediate
 * queued from an I/O callback runs before the next poll, so it takes two.
 */
async function eventLoopTurn(): Promise<void> {
  await nextTurn();
  await nextTurn();
}

/** How long after its revoked_at a revocation is surely committed and seen by every node. */
const REVOCATION_SETTLED_MS = 3600 * 1000;

function toHead(row: StoredHead): CrlHead {
  return {
    caId: row.ca_id,
    crlNumber: row.crl_number,
    thisUpdate: new Date(row.this_update),
    nextUpdate: new Date(row.next_update),
  };
}

function toHeadOf({ caId, crlNumber, thisUpdate, nextUpdate }: CrlHead): CrlHead {
  return { caId, crlNumber, thisUpdate, nextUpdate };
}

function toCurrent(row: CrlsTable): CurrentCrl {
  return { ...toHead(row), der: Buffer.from(row.der, 'base64') };
}

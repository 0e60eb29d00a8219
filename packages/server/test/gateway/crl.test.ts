import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parseDeviceId } from '@keyferry/core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runCommand } from '../../../../test/support/processes.ts';
import { recordGatewayCall } from '../../src/gateway/device-registry.ts';
import {
  revocationVersion as caRevocationVersion,
  crlHeldBytes,
  currentCrl,
  currentCrlHead,
  onCertificatesRevoked,
  setCrlHeldBytes,
  THREAD_READ_FROM,
} from '../../src/revocation/crl-store.ts';
import { recordStatementTexts } from '../../src/storage/statement-count.ts';
import { ThreadReader } from '../../src/storage/thread-reader.ts';
import { BACKENDS } from '../support/databases.ts';
import { startTestService, type TestService } from '../support/service.ts';
import { type GatewayFactory, issueDeviceCert, NC12, setupGatewayFactory } from './fixtures.ts';

// a test below asks for a collection, to see what is still held
setFlagsFromString('--expose-gc');

const spki = () =>
  new Uint8Array(
    generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' }),
  );

/** openssl's own reading of a CRL, verified with the CA certificate. */
function opensslCrl(work: string, der: Buffer, caPem: string) {
  writeFileSync(join(work, 'ca.pem'), caPem);
  writeFileSync(join(work, 'downloaded.crl'), der);
  const res = spawnSync(
    'openssl',
    [
      'crl',
      '-inform',
      'DER',
      '-in',
      join(work, 'downloaded.crl'),
      '-CAfile',
      join(work, 'ca.pem'),
      '-noout',
      '-text',
    ],
    { encoding: 'utf8' },
  );
  expect(res.status, res.stderr).toBe(0);
  expect(res.stderr).toContain('verify OK');
  const number = /X509v3 CRL Number:\s*\n\s*(\d+)/.exec(res.stdout)?.[1];
  const serials = [...res.stdout.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) =>
    m[1]!.replace(/^0+/, '').toLowerCase(),
  );
  return { text: res.stdout, number: Number(number), serials };
}

describe.each(BACKENDS)('CRLs and the gateway device list (%s)', (backend) => {
  let svc: TestService;
  let demo: GatewayFactory;
  let other: GatewayFactory;
  let work: string;
  const crlPath = (f: GatewayFactory, caId = f.ca.id) => `${svc.url}/crl/${f.name}/${caId}.crl`;
  const snapshot = () =>
    svc.service.ctx.database.db.selectFrom('crls').selectAll().orderBy('ca_id').execute();
  const revocationVersion = (caId: number) => caRevocationVersion(svc.service.ctx.database.db, caId);
  const revokedAt = async (serial: string) =>
    (
      await svc.service.ctx.database.db
        .selectFrom('certificates')
        .select('revoked_at')
        .where('serial_hex', '=', serial)
        .executeTakeFirstOrThrow()
    ).revoked_at;
  /** Revokes as superseded (the rotation's reason) without telling the revocation module. */
  const supersede = (serials: string[], at = new Date()) =>
    svc.service.ctx.database.db
      .updateTable('certificates')
      .set({ revoked_at: at.toISOString(), revocation_reason: 'superseded' })
      .where('serial_hex', 'in', serials)
      .execute();

  beforeAll(async () => {
    svc = await startTestService(backend);
    demo = await setupGatewayFactory(svc, 'demo');
    other = await setupGatewayFactory(svc, 'other');
    work = mkdtempSync(join(tmpdir(), 'keyferry-crl-'));
  });
  afterAll(async () => {
    await svc?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('serves a verifiable CRL without a token, listing each revocation with a higher CRL number', async () => {
    const first = await fetch(crlPath(demo));
    expect(first.status).toBe(200);
    expect(first.headers.get('content-type')).toBe('application/pkix-crl');
    const empty = opensslCrl(work, Buffer.from(await first.arrayBuffer()), demo.ca.pem);
    expect(empty.text).toContain('No Revoked Certificates');
    expect(empty.serials).toEqual([]);

    const id = parseDeviceId('0x04005001eee3ba1ee96e60047e57da0f6890');
    expect(
      (
        await svc.call('POST', '/ota/factories/demo/el2g/devices/', {
          body: { 'product-id': NC12, devices: [`0x${id.hex}`] },
        })
      ).status,
    ).toBe(200);
    const row = await svc.service.ctx.database.db
      .selectFrom('devices')
      .select('id')
      .where('device_id', '=', id.decimal)
      .executeTakeFirstOrThrow();
    const doomed = await issueDeviceCert(svc, demo, {
      publicKeySpki: spki(),
      deviceId: id,
      deviceRowId: row.id,
    });
    const kept = await issueDeviceCert(svc, demo, { publicKeySpki: spki() });
    const beforeDelete = (await snapshot()).find((r) => r.ca_id === demo.ca.id);
    expect(beforeDelete?.crl_number).toBe(empty.number);
    // The allow-list delete re-signs the CA's CRL once its transaction commits, before any read.
    expect(
      (
        await svc.call('DELETE', '/ota/factories/demo/el2g/devices/', {
          body: { 'product-id': NC12, devices: [`0x${id.hex}`] },
        })
      ).status,
    ).toBe(200);
    const resigned = (await snapshot()).find((r) => r.ca_id === demo.ca.id);
    expect(resigned?.crl_number).toBe(empty.number + 1);
    expect(resigned?.revoked_count).toBe(1);
    const storedAfterDelete = opensslCrl(work, Buffer.from(resigned!.der, 'base64'), demo.ca.pem);
    expect(storedAfterDelete.serials).toEqual([doomed.cert.serialHex.replace(/^0+/, '')]);
    const afterDelete = opensslCrl(
      work,
      Buffer.from(await (await fetch(crlPath(demo))).arrayBuffer()),
      demo.ca.pem,
    );
    expect(afterDelete.serials).toEqual([doomed.cert.serialHex.replace(/^0+/, '')]);
    expect(afterDelete.text).toContain('Cessation Of Operation');
    expect(afterDelete.number).toBe(resigned?.crl_number);

    // Unchanged revocations: the same CRL again, not a new one.
    const same = opensslCrl(work, Buffer.from(await (await fetch(crlPath(demo))).arrayBuffer()), demo.ca.pem);
    expect(same.number).toBe(afterDelete.number);

    // Rotation revokes as superseded and tells the revocation module, which re-signs at once.
    await supersede([kept.cert.serialHex]);
    const pushed = await onCertificatesRevoked(
      { db: svc.service.ctx.database.db, custody: svc.service.ctx.custody },
      demo.ca.id,
    );
    expect(pushed.crlNumber).toBe(afterDelete.number + 1);
    const stored = await snapshot();
    const rotated = await fetch(crlPath(demo));
    expect(rotated.headers.get('x-crl-number')).toBe(String(pushed.crlNumber));
    const parsed = opensslCrl(work, Buffer.from(await rotated.arrayBuffer()), demo.ca.pem);
    expect(parsed.number).toBe(pushed.crlNumber);
    expect(parsed.serials.sort()).toEqual(
      [doomed.cert.serialHex, kept.cert.serialHex].map((s) => s.replace(/^0+/, '')).sort(),
    );
    expect(parsed.text).toContain('Superseded');
    expect(await snapshot()).toEqual(stored);
  });

  it('reads a long listing on a thread of its own on SQLite, on the connection when that thread fails', async () => {
    const f = await setupGatewayFactory(svc, 'threaded');
    const db = svc.service.ctx.database.db;
    const deps = { db, custody: svc.service.ctx.custody };
    const revoke = (serial: string, reason: string) =>
      db
        .updateTable('certificates')
        .set({ revoked_at: new Date().toISOString(), revocation_reason: reason })
        .where('serial_hex', '=', serial)
        .execute();
    const certs: string[] = [];
    for (const reason of ['keyCompromise', 'superseded', 'allow-list entry deleted']) {
      const issued = await issueDeviceCert(svc, f, { publicKeySpki: spki() });
      await revoke(issued.cert.serialHex, reason);
      certs.push(issued.cert.serialHex);
    }
    const reads = vi.spyOn(ThreadReader.prototype, 'read');
    const listingReads = () =>
      reads.mock.calls.filter(([query]) => /"revoked_at" is not null/.test(query.sql)).length;
    const listed = (crl: { der: Uint8Array }) => opensslCrl(work, Buffer.from(crl.der), f.ca.pem);
    try {
      // a short list: on the connection, with every reason
      const short = listed(await onCertificatesRevoked(deps, f.ca.id));
      expect(listingReads()).toBe(0);
      expect(short.serials.sort()).toEqual(certs.map((s) => s.replace(/^0+/, '')).sort());
      for (const reason of ['Key Compromise', 'Superseded', 'Cessation Of Operation'])
        expect(short.text).toContain(reason);

      // a fleet's worth more revoked: the next CRL still reads on the connection (the last
      // listed three), the one after on the thread
      const template = await db
        .selectFrom('certificates')
        .selectAll()
        .where('serial_hex', '=', certs[1]!)
        .executeTakeFirstOrThrow();
      const { id: _, ...row } = template;
      for (let from = 0; from < THREAD_READ_FROM; from += 500) {
        const copies = Array.from({ length: 500 }, (_, i) => ({
          ...row,
          serial_hex: `7e${(from + i).toString(16).padStart(30, '0')}`,
        }));
        await db.insertInto('certificates').values(copies).execute();
      }
      const grown = await onCertificatesRevoked(deps, f.ca.id);
      expect(listingReads()).toBe(0);
      const onConnection = listed(grown).serials.sort();
      expect(onConnection).toHaveLength(THREAD_READ_FROM + 3);
      await revoke(certs[0]!, 'superseded');
      const threaded = await onCertificatesRevoked(deps, f.ca.id);
      expect(threaded.crlNumber).toBe(grown.crlNumber + 1);
      // SQLite on a file: keyferryd's processes read it on the thread; PostgreSQL on its connection
      expect(listingReads()).toBe(backend === 'sqlite' ? 1 : 0);
      expect(listed(threaded).serials.sort()).toEqual(onConnection);

      // a thread that fails leaves the listing to the connection: the same entries
      reads.mockRejectedValueOnce(new Error('the thread reader stopped'));
      await revoke(certs[0]!, 'keyCompromise');
      const fallback = await onCertificatesRevoked(deps, f.ca.id);
      expect(listingReads()).toBe(backend === 'sqlite' ? 2 : 0);
      expect(fallback.crlNumber).toBe(threaded.crlNumber + 1);
      expect(listed(fallback).serials.sort()).toEqual(onConnection);
    } finally {
      reads.mockRestore();
    }
  });

  it('drops a revoked certificate from the CRL once a CRL signed after its expiry listed it', async () => {
    const f = await setupGatewayFactory(svc, 'expiry');
    const db = svc.service.ctx.database.db;
    const deps = { db, custody: svc.service.ctx.custody };
    const day = 24 * 3600 * 1000;
    const brief = await issueDeviceCert(svc, f, { publicKeySpki: spki(), validityDays: 1 });
    const lasting = await issueDeviceCert(svc, f, { publicKeySpki: spki() });
    const start = Date.now();
    await supersede([brief.cert.serialHex, lasting.cert.serialHex], new Date(start));
    const listed = async (at: number) => {
      const crl = await currentCrl(deps, f.ca.id, new Date(at));
      const read = opensslCrl(work, Buffer.from(crl.der), f.ca.pem);
      expect(read.number).toBe(crl.crlNumber);
      return read.serials.sort();
    };
    const both = [brief.cert.serialHex, lasting.cert.serialHex].map((s) => s.replace(/^0+/, '')).sort();
    expect(await listed(start)).toEqual(both);
    // signed after `brief` expired, the CRL before it signed while it was valid: still listed
    expect(await listed(start + 6.5 * day)).toEqual(both);
    // the CRL before this one was signed after `brief` expired and listed it: dropped
    expect(await listed(start + 13 * day)).toEqual([lasting.cert.serialHex.replace(/^0+/, '')]);
    const row = await db
      .selectFrom('crls')
      .selectAll()
      .where('ca_id', '=', f.ca.id)
      .executeTakeFirstOrThrow();
    expect(row.revoked_count).toBe(1);
    // both revoked rows stay, and an expiry is no revocation change: the CRL is still current
    expect(await revocationVersion(f.ca.id)).toBe(row.revocation_version);
    expect((await currentCrl(deps, f.ca.id, new Date(start + 13 * day))).crlNumber).toBe(row.crl_number);
    const revokedRows = await db
      .selectFrom('certificates')
      .select('id')
      .where('ca_id', '=', f.ca.id)
      .where('revoked_at', 'is not', null)
      .execute();
    expect(revokedRows).toHaveLength(2);
  });

  it("counts every change to a CA's revoked certificates, whatever code makes it, and only those", async () => {
    const f = await setupGatewayFactory(svc, 'versions');
    const db = svc.service.ctx.database.db;
    const deps = { db, custody: svc.service.ctx.custody };
    const certs = await Promise.all(
      Array.from({ length: 3 }, () => issueDeviceCert(svc, f, { publicKeySpki: spki() })),
    );
    const signed = await currentCrl(deps, f.ca.id);
    const v0 = await revocationVersion(f.ca.id);
    const where = (serial: string) => (eb: any) => eb('ca_id', '=', f.ca.id).and('serial_hex', '=', serial);
    const serials = certs.map((c) => c.cert.serialHex);
    const listed = async () =>
      opensslCrl(work, Buffer.from((await currentCrl(deps, f.ca.id)).der), f.ca.pem).serials.sort();
    /** Deletes the row of `serial`; returns the function that inserts it again (with a new id). */
    const remove = async (serial: string) => {
      const { id: _id, ...columns } = await db
        .selectFrom('certificates')
        .selectAll()
        .where(where(serial))
        .executeTakeFirstOrThrow();
      await db.deleteFrom('certificates').where(where(serial)).execute();
      return () => db.insertInto('certificates').values(columns).execute();
    };

    // not revocation changes: another column, and an unrevoked row's reason left as it is
    await db.updateTable('certificates').set({ pem: 'x' }).where(where(serials[0]!)).execute();
    await db.updateTable('certificates').set({ revocation_reason: null }).where(where(serials[0]!)).execute();
    expect(await revocationVersion(f.ca.id)).toBe(v0);
    expect((await currentCrl(deps, f.ca.id)).crlNumber).toBe(signed.crlNumber);

    // two revoked in one statement, without telling the revocation module
    await supersede(serials.slice(0, 2));
    expect(await revocationVersion(f.ca.id)).toBe(v0 + 2);
    const afterRevoking = await currentCrl(deps, f.ca.id);
    expect(afterRevoking.crlNumber).toBe(signed.crlNumber + 1);
    // the same values written again change nothing; a new reason does
    await supersede([serials[0]!], new Date(Date.parse((await revokedAt(serials[0]!))!)));
    expect(await revocationVersion(f.ca.id)).toBe(v0 + 2);
    await db
      .updateTable('certificates')
      .set({ revocation_reason: 'key compromise' })
      .where(where(serials[1]!))
      .execute();
    expect(await revocationVersion(f.ca.id)).toBe(v0 + 3);
    const compromised = opensslCrl(work, Buffer.from((await currentCrl(deps, f.ca.id)).der), f.ca.pem);
    expect(compromised.number).toBe(afterRevoking.crlNumber + 1);
    expect(compromised.text).toContain('Key Compromise');
    // a revoked row deleted, and one inserted revoked (a restore, a hand-made repair)
    const restore = await remove(serials[0]!);
    expect(await revocationVersion(f.ca.id)).toBe(v0 + 4);
    expect(await listed()).toEqual([serials[1]!.replace(/^0+/, '')]);
    await restore();
    expect(await revocationVersion(f.ca.id)).toBe(v0 + 5);
    expect(await listed()).toEqual(
      serials
        .slice(0, 2)
        .map((s) => s.replace(/^0+/, ''))
        .sort(),
    );
    // an unrevoked row deleted or inserted is no revocation change
    await (await remove(serials[2]!))();
    expect(await revocationVersion(f.ca.id)).toBe(v0 + 5);

    // a CRL stored before migration 017 has no version: signed again at its first read, once
    const current = await currentCrl(deps, f.ca.id);
    await db.updateTable('crls').set({ revocation_version: null }).where('ca_id', '=', f.ca.id).execute();
    expect((await currentCrl(deps, f.ca.id)).crlNumber).toBe(current.crlNumber + 1);
    expect((await currentCrl(deps, f.ca.id)).crlNumber).toBe(current.crlNumber + 1);
  });

  it('answers a fetch with the saved ETag 304 until the CA signs a new CRL (curl --etag-compare)', async () => {
    const f = await setupGatewayFactory(svc, 'etag');
    const tag = join(work, 'etag.txt');
    // not spawnSync: the service answering curl is in this process
    const curl = async (out: string, ...flags: string[]) => {
      const args = ['-sS', '-o', join(work, out), '-D', '-', '-w', '%{http_code}', ...flags, crlPath(f)];
      const res = await runCommand('curl', args, { timeoutMs: 60_000 });
      expect(res.status, res.stderr).toBe(0);
      return { status: Number(res.stdout.slice(-3)), headers: res.stdout.toLowerCase() };
    };
    const first = await curl('first.crl', '--etag-save', tag);
    expect(first.status).toBe(200);
    const number = /x-crl-number: (\d+)/.exec(first.headers)?.[1];
    expect(readFileSync(tag, 'utf8').trim()).toMatch(new RegExp(`^"crl-${f.ca.id}-${number}-[0-9a-z]+"$`));
    const before = await snapshot();
    const sent = recordStatementTexts();
    const again = await curl('again.crl', '--etag-compare', tag, '--etag-save', tag);
    expect(again.status).toBe(304);
    expect(again.headers).toContain(`x-crl-number: ${number}`);
    // a 304 does not read the CRL it does not send (~3 MB as stored at 60,000 entries)
    const crlReads = sent().filter((text) => /\bfrom "crls"/.test(text));
    expect(crlReads.length).toBeGreaterThan(0);
    for (const text of crlReads) expect(text).not.toMatch(/select \*|"der"/);
    expect(await snapshot()).toEqual(before);
    const revoked = await issueDeviceCert(svc, f, { publicKeySpki: spki() });
    await supersede([revoked.cert.serialHex]);
    const changed = await curl('changed.crl', '--etag-compare', tag, '--etag-save', tag);
    expect(changed.status).toBe(200);
    const read = opensslCrl(work, readFileSync(join(work, 'changed.crl')), f.ca.pem);
    expect(read.number).toBe(Number(number) + 1);
    expect(read.serials).toEqual([revoked.cert.serialHex.replace(/^0+/, '')]);
    expect(readFileSync(tag, 'utf8').trim()).toMatch(
      new RegExp(`^"crl-${f.ca.id}-${read.number}-[0-9a-z]+"$`),
    );
  });

  it('sends the CRL it holds while it is the stored one, and the one another node signed once it is', async () => {
    const f = await setupGatewayFactory(svc, 'held');
    const db = svc.service.ctx.database.db;
    const fetched = async () => {
      const res = await fetch(crlPath(f));
      expect(res.status).toBe(200);
      return opensslCrl(work, Buffer.from(await res.arrayBuffer()), f.ca.pem);
    };
    const first = await fetched();
    const sent = recordStatementTexts();
    expect(await fetched()).toEqual(first);
    // the CRL signed or read before, not read from the database again
    const crlReads = sent().filter((text) => /\bfrom "crls"/.test(text));
    expect(crlReads.length).toBeGreaterThan(0);
    for (const text of crlReads) expect(text).not.toMatch(/select \*|"der"/);
    // another node revokes and signs (its own database handle, within a transaction)
    const revoked = await issueDeviceCert(svc, f, { publicKeySpki: spki() });
    const signed = await db.transaction().execute(async (trx) => {
      await trx
        .updateTable('certificates')
        .set({ revoked_at: new Date().toISOString(), revocation_reason: 'superseded' })
        .where('serial_hex', '=', revoked.cert.serialHex)
        .execute();
      return onCertificatesRevoked({ db: trx, custody: svc.service.ctx.custody }, f.ca.id);
    });
    const after = await fetched();
    expect(after.number).toBe(signed.crlNumber);
    expect(after.number).toBe(first.number + 1);
    expect(after.serials).toEqual([revoked.cert.serialHex.replace(/^0+/, '')]);
  });

  it('keeps signed CRLs up to crl.heldBytes, the least recently sent going first', async () => {
    const [a, b, c] = [
      await setupGatewayFactory(svc, 'kept-a'),
      await setupGatewayFactory(svc, 'kept-b'),
      await setupGatewayFactory(svc, 'kept-c'),
    ];
    /** Fetches f's CRL: its size, and whether its bytes were read from the database. */
    const fetchCrl = async (f: GatewayFactory) => {
      const sent = recordStatementTexts();
      const res = await fetch(crlPath(f));
      expect(res.status).toBe(200);
      const size = (await res.arrayBuffer()).byteLength;
      const read = sent().some((text) => /\bfrom "crls"/.test(text) && /select \*|"der"/.test(text));
      return { size, read };
    };
    const read = async (f: GatewayFactory) => (await fetchCrl(f)).read;
    const configured = crlHeldBytes();
    try {
      setCrlHeldBytes(0);
      const first = await fetchCrl(a);
      expect(await fetchCrl(a)).toEqual({ size: first.size, read: true });
      const sizes = [first.size, (await fetchCrl(b)).size, (await fetchCrl(c)).size];
      // room for any two of the three, not for all three
      const room = Math.floor(Math.max(...sizes) * 2.5);
      expect(sizes.reduce((sum, size) => sum + size)).toBeGreaterThan(room);
      setCrlHeldBytes(room);
      expect([await read(a), await read(a), await read(b), await read(b)]).toEqual([
        true,
        false,
        true,
        false,
      ]);
      // a sent again after b: c pushes b out, not a
      expect([await read(a), await read(c), await read(a), await read(c)]).toEqual([
        false,
        true,
        false,
        false,
      ]);
      expect(await read(b)).toBe(true);
    } finally {
      setCrlHeldBytes(configured);
    }
  });

  it('holds no signed CRL beyond crl.heldBytes, not even the one it signed last', async () => {
    const f = await setupGatewayFactory(svc, 'held-none');
    const deps = { db: svc.service.ctx.database.db, custody: svc.service.ctx.custody };
    const configured = crlHeldBytes();
    const collect = runInNewContext('gc') as () => void;
    try {
      setCrlHeldBytes(0);
      // what a rebuild keeps for the callers that share it is the head, not the signed CRL
      const head = await currentCrlHead(deps, f.ca.id);
      expect(Object.keys(head).sort()).toEqual(['caId', 'crlNumber', 'nextUpdate', 'thisUpdate']);
      const signed = new WeakRef(
        (await onCertificatesRevoked(deps, f.ca.id, new Date(Date.now() + 7 * 86400_000))).der,
      );
      // a WeakRef's target lives until the job that made it ends
      await new Promise((resolve) => setImmediate(resolve));
      collect();
      expect(signed.deref()).toBeUndefined();
      // and the next read still finds it current: the same CRL, read from the database
      const again = await currentCrl(deps, f.ca.id);
      expect(again.crlNumber).toBe(2);
    } finally {
      setCrlHeldBytes(configured);
    }
  });

  it('answers 404 for a CA of another factory, an unknown CA and a malformed name, changing nothing', async () => {
    await fetch(crlPath(demo));
    const before = await snapshot();
    for (const path of [
      crlPath(demo, other.ca.id),
      crlPath(demo, 999_999),
      `${svc.url}/crl/demo/${demo.ca.id}.pem`,
      `${svc.url}/crl/nosuch/${demo.ca.id}.crl`,
    ]) {
      const res = await fetch(path);
      expect(res.status, path).toBe(404);
      const body = (await res.json()) as any;
      expect(body.code).toBe('not_found');
      expect(body.detail).toContain('/crl/<factory>/<intermediate CA id>.crl');
    }
    expect(await snapshot()).toEqual(before);
  });

  it('lists registered devices page by page at GET devices/', async () => {
    const db = svc.service.ctx.database.db;
    for (const n of [1, 2, 3]) {
      const { cert } = await issueDeviceCert(svc, demo, {
        publicKeySpki: spki(),
        deviceId: parseDeviceId(`0x04005001eee3ba1ee96e60047e57da0f670${n}`),
      });
      await recordGatewayCall(db, demo.factoryId, cert, { correlationId: `test-${n}` });
    }
    const first = await svc.call('GET', '/ota/factories/demo/devices/?limit=2');
    expect(first.status).toBe(200);
    expect(first.json.map((d: any) => d.name)).toEqual([
      '04005001eee3ba1ee96e60047e57da0f6701',
      '04005001eee3ba1ee96e60047e57da0f6702',
    ]);
    const cursor = first.headers.get('x-next-cursor');
    expect(cursor).toMatch(/^\d+$/);
    const second = await svc.call('GET', `/ota/factories/demo/devices/?limit=2&after=${cursor}`);
    expect(second.json.map((d: any) => d.name)).toEqual(['04005001eee3ba1ee96e60047e57da0f6703']);
    expect(second.headers.get('x-next-cursor')).toBeNull();
    const otherList = await svc.call('GET', '/ota/factories/other/devices/', {
      headers: { 'osf-token': other.token },
    });
    expect(otherList.json).toEqual([]);
  });

  it('refuses bad paging and missing tokens at GET devices/', async () => {
    const bad = await svc.call('GET', '/ota/factories/demo/devices/?limit=0');
    expect(bad.status).toBe(400);
    expect(bad.json.code).toBe('invalid_request');
    const unknown = await svc.call('GET', '/ota/factories/demo/devices/?sort=name');
    expect(unknown.json.code).toBe('unknown_field');
    const anonymous = await fetch(`${svc.url}/ota/factories/demo/devices/`);
    expect(anonymous.status).toBe(401);
  });
});

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KeyCustody } from '../../src/keys/custody.ts';
import { resignDueCrls } from '../../src/revocation/resign.ts';
import { BACKENDS } from '../support/databases.ts';
import { startTestService, type TestService } from '../support/service.ts';
import { type GatewayFactory, setupGatewayFactory } from './fixtures.ts';

/**
 * Issue 15 §4: CRLs are re-signed before their nextUpdate by keyferryd's timer, with no
 * revocation; with two nodes on one PostgreSQL database only one of them signs each CRL.
 */
let work: string;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'keyferry-crl-resign-'));
});
afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** openssl's reading of the served CRL: verified against the CA, its number and nextUpdate. */
async function servedCrl(svc: TestService, f: GatewayFactory) {
  const answer = await fetch(`${svc.url}/crl/${f.name}/${f.ca.id}.crl`);
  expect(answer.status).toBe(200);
  writeFileSync(join(work, 'ca.pem'), f.ca.pem);
  writeFileSync(join(work, 'served.crl'), Buffer.from(await answer.arrayBuffer()));
  const res = spawnSync(
    'openssl',
    [
      'crl',
      '-inform',
      'DER',
      '-in',
      join(work, 'served.crl'),
      '-CAfile',
      join(work, 'ca.pem'),
      '-noout',
      '-text',
    ],
    { encoding: 'utf8' },
  );
  expect(res.status, res.stderr).toBe(0);
  expect(res.stderr).toContain('verify OK');
  const nextUpdate = /Next Update: (.+)/.exec(res.stdout)?.[1];
  return {
    number: Number(/X509v3 CRL Number:\s*\n\s*(\d+)/.exec(res.stdout)?.[1]),
    nextUpdate: Date.parse(nextUpdate!),
    noneRevoked: res.stdout.includes('No Revoked Certificates'),
  };
}

const storedNumber = async (svc: TestService, f: GatewayFactory) =>
  (
    await svc.service.ctx.database.db
      .selectFrom('crls')
      .select('crl_number')
      .where('ca_id', '=', f.ca.id)
      .executeTakeFirstOrThrow()
  ).crl_number;

const deps = (svc: TestService) => ({
  db: svc.service.ctx.database.db,
  dialect: svc.service.ctx.database.dialect,
  custody: svc.service.ctx.custody,
  log: svc.service.ctx.log,
});

/** A SQLite keyferryd with `crl` timing and its demo factory, started for the describe it is called in. */
function sqliteServiceWithFactory(crl: { validity: string; renewBefore: string; checkInterval: string }) {
  const one = {} as { svc: TestService; f: GatewayFactory };
  beforeAll(async () => {
    one.svc = await startTestService('sqlite', { crl });
    one.f = await setupGatewayFactory(one.svc, 'demo');
  });
  afterAll(async () => {
    await one.svc?.stop();
  });
  return one;
}

describe.each(BACKENDS)('CRL re-sign before nextUpdate (%s)', (backend) => {
  let a: TestService;
  let b: TestService;
  let f: GatewayFactory;
  const crl = { validity: '1h', renewBefore: '10m', checkInterval: '1h' };

  beforeAll(async () => {
    a = await startTestService(backend, { crl });
    // SQLite is one node's file; two nodes share a database only on PostgreSQL
    b = backend === 'postgres' ? await startTestService(backend, { crl }, { sharedWith: a }) : a;
    f = await setupGatewayFactory(a, 'demo');
  });
  afterAll(async () => {
    if (b !== a) await b?.stop();
    await a?.stop();
  });

  it('re-signs a CRL near its nextUpdate once across two nodes, and leaves a fresh one alone', async () => {
    const first = await servedCrl(a, f);
    expect(first.noneRevoked).toBe(true);
    // fresh: nothing is due now
    expect(await resignDueCrls(deps(a))).toEqual([]);
    expect(await storedNumber(a, f)).toBe(first.number);

    // 55 minutes on, the CRL is within renewBefore of its nextUpdate: both nodes try at once
    const later = new Date(Date.now() + 55 * 60_000);
    const [byA, byB] = await Promise.all([resignDueCrls(deps(a), later), resignDueCrls(deps(b), later)]);
    expect([...byA, ...byB]).toEqual([f.ca.id]);
    expect(await storedNumber(a, f)).toBe(first.number + 1);

    const second = await servedCrl(b, f);
    expect(second.number).toBe(first.number + 1);
    expect(second.noneRevoked).toBe(true);
    expect(second.nextUpdate).toBeGreaterThan(first.nextUpdate);
  });
});

describe('the re-sign before nextUpdate on a SQLite file', () => {
  const one = sqliteServiceWithFactory({ validity: '1h', renewBefore: '10m', checkInterval: '1h' });

  it("holds no write lock while it signs, so another worker process's writes go on", async () => {
    const { svc, f } = one;
    const first = await servedCrl(svc, f);
    // the CA key's signature waits until the other connection has written
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let signing!: () => void;
    const signingStarted = new Promise<void>((resolve) => {
      signing = resolve;
    });
    const real = svc.service.ctx.custody;
    const custody: KeyCustody = {
      backend: real.backend,
      generate: (purpose) => real.generate(purpose),
      discard: (key) => real.discard(key),
      verifyAccess: (db) => real.verifyAccess(db),
      close: () => real.close(),
      signer: async (key) => {
        const signer = await real.signer(key);
        return {
          publicKeySpki: signer.publicKeySpki,
          sign: async (data) => {
            signing();
            await released;
            return signer.sign(data);
          },
        };
      },
    };
    const later = new Date(Date.now() + 55 * 60_000);
    const resign = resignDueCrls({ ...deps(svc), custody }, later);
    await signingStarted;
    // as a worker process would: its own connection, no busy wait, a write transaction
    const other = new Database(join(svc.dataDir, 'keyferry.db'), { timeout: 0 });
    let second: Promise<number[]>;
    try {
      expect(() => other.exec('BEGIN IMMEDIATE; ROLLBACK')).not.toThrow();
      // a second re-sign of this process meanwhile finds the CA due and leaves it to the first
      second = resignDueCrls(deps(svc), later);
      // (its read of the due CRLs is answered before this one, on the one connection)
      await svc.service.ctx.database.db.selectFrom('crls').select('ca_id').execute();
    } finally {
      other.close();
      release();
    }
    expect(await Promise.all([resign, second])).toEqual([[f.ca.id], []]);
    expect(await storedNumber(svc, f)).toBe(first.number + 1);
  });
});

describe('keyferryd re-signs CRLs on its timer (sqlite)', () => {
  const one = sqliteServiceWithFactory({ validity: '4s', renewBefore: '3s', checkInterval: '1s' });

  it('advances the served nextUpdate with no revocation and no read in between', {
    timeout: 60_000,
  }, async () => {
    const { svc, f } = one;
    const first = await servedCrl(svc, f);
    // watch the stored row only: reading the CRL would rebuild it lazily and hide the timer
    while ((await storedNumber(svc, f)) === first.number) await new Promise((r) => setTimeout(r, 200));
    const db = svc.service.ctx.database.db;
    const revoked = await db
      .selectFrom('certificates')
      .select((eb) => eb.fn.countAll().as('n'))
      .where('revoked_at', 'is not', null)
      .executeTakeFirstOrThrow();
    expect(Number(revoked.n)).toBe(0);
    const second = await servedCrl(svc, f);
    expect(second.number).toBeGreaterThan(first.number);
    expect(second.nextUpdate).toBeGreaterThan(first.nextUpdate);
  });
});

describe('crl config', () => {
  it('refuses renewBefore not shorter than validity, and a bad duration', async () => {
    const { validateConfig } = await import('../../src/config/load.ts');
    expect(() => validateConfig({ crl: { validity: '1h', renewBefore: '1h' } })).toThrow(/renewBefore/);
    expect(() => validateConfig({ crl: { validity: 'soon' } })).toThrow(/duration/);
  });
});

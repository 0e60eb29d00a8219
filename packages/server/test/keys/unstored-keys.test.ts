import { execFileSync } from 'node:child_process';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS } from '../../../../test/support/processes.ts';
import { createSofthsmEnv, initTestToken, type SofthsmEnv } from '../../../../test/support/softhsm.ts';
import { discardUnstored, insertCustodyKey } from '../../src/keys/custody.ts';
import { startTestService, type TestService } from '../support/service.ts';

const F = '/ota/factories/demo';
const AWS_CODE = 'a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90';

/**
 * A request that generates a CA key on the PKCS#11 token and then fails before its row is
 * committed must not leave the key pair on the token: nothing would ever use or remove it.
 * The failure is a database trigger that refuses the request's write after the key exists.
 */
describe('pkcs11 custody: a failed request leaves no key on the token', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  let hsm: SofthsmEnv;
  let svc: TestService;
  const tokenLabel = 'unstored';
  const pin = '2468';

  beforeAll(async () => {
    hsm = createSofthsmEnv();
    initTestToken(hsm.conf, { label: tokenLabel, userPin: pin });
    svc = await startTestService('sqlite', {
      keyCustody: { kind: 'pkcs11', module: hsm.module, tokenLabel, pin },
    });
  });
  afterAll(async () => {
    await svc?.stop();
    hsm?.cleanup();
  });

  /** The labels of the token's private keys, read by pkcs11-tool (OpenSC), not our code. */
  function tokenKeys(): string[] {
    const out = execFileSync(
      'pkcs11-tool',
      [
        '--module',
        hsm.module,
        '--token-label',
        tokenLabel,
        '--login',
        '--pin',
        pin,
        '--list-objects',
        '--type',
        'privkey',
      ],
      { env: hsm.env, encoding: 'utf8' },
    );
    return [...out.matchAll(/label:\s+(\S+)/g)].map((m) => m[1]!).sort();
  }

  async function storedPkcs11Keys(): Promise<string[]> {
    const rows = await svc.service.ctx.database.db
      .selectFrom('custody_keys')
      .select('material')
      .where('backend', '=', 'pkcs11')
      .execute();
    return rows.map((r) => r.material).sort();
  }

  /** Runs `send` while inserts into `table` fail; the answer, and the token's keys before and after. */
  async function failingInsert(table: string, send: () => Promise<{ status: number; json: any }>) {
    const db = svc.service.ctx.database.db;
    const before = tokenKeys();
    await sql
      .raw(
        `CREATE TRIGGER refuse_${table} BEFORE INSERT ON ${table} BEGIN SELECT RAISE(ABORT, 'disk refused'); END`,
      )
      .execute(db);
    try {
      const answer = await send();
      return { answer, before, after: tokenKeys() };
    } finally {
      await sql.raw(`DROP TRIGGER refuse_${table}`).execute(db);
    }
  }

  it('keys ca create with an online CA (certs/ ca-csr): the key made before online_cas refused', async () => {
    const body = { 'first-time-init': true, 'tls-csr': true, 'ca-csr': true };
    const { answer, before, after } = await failingInsert('online_cas', () =>
      svc.call('POST', `${F}/certs/`, { body }),
    );
    expect(answer.status).toBe(500);
    expect(after).toEqual(before);
    expect(after).toEqual(await storedPkcs11Keys());
    // the same request once the database takes it: exactly one key more, and it is stored
    const ok = await svc.call('POST', `${F}/certs/`, { body });
    expect(ok.status, JSON.stringify(ok.json)).toBeLessThan(300);
    expect(tokenKeys()).toHaveLength(before.length + 1);
    expect(tokenKeys()).toEqual(await storedPkcs11Keys());
  });

  it('el2g device-gateway: the key made before ca_requests refused', async () => {
    const { answer, before, after } = await failingInsert('ca_requests', () =>
      svc.call('POST', `${F}/el2g/device-gateway/`, { body: {} }),
    );
    expect(answer.status).toBe(500);
    expect(after).toEqual(before);
    expect(after).toEqual(await storedPkcs11Keys());
    const ok = await svc.call('POST', `${F}/el2g/device-gateway/`, { body: {} });
    expect(ok.status, JSON.stringify(ok.json)).toBeLessThan(300);
    expect(tokenKeys()).toHaveLength(before.length + 1);
    expect(tokenKeys()).toEqual(await storedPkcs11Keys());
  });

  it('el2g aws-iot: the key made before intermediate_cas refused', async () => {
    const body = { 'registration-code': AWS_CODE };
    const { answer, before, after } = await failingInsert('intermediate_cas', () =>
      svc.call('POST', `${F}/el2g/aws-iot/`, { body }),
    );
    expect(answer.status).toBe(500);
    expect(after).toEqual(before);
    expect(after).toEqual(await storedPkcs11Keys());
    const ok = await svc.call('POST', `${F}/el2g/aws-iot/`, { body });
    expect(ok.status, JSON.stringify(ok.json)).toBeLessThan(300);
    expect(tokenKeys()).toHaveLength(before.length + 1);
    expect(tokenKeys()).toEqual(await storedPkcs11Keys());
  });

  it('discards a key only while no row names it (a commit that failed to answer may have stored it)', async () => {
    const { custody, database } = svc.service.ctx;
    const stored = await custody.generate('test:stored');
    const unstored = await custody.generate('test:unstored');
    await insertCustodyKey(database.db, stored);
    expect(tokenKeys()).toEqual(expect.arrayContaining([stored.material, unstored.material]));
    await discardUnstored(database.db, custody, stored);
    await discardUnstored(database.db, custody, unstored);
    expect(tokenKeys()).toContain(stored.material);
    expect(tokenKeys()).not.toContain(unstored.material);
    // the stored key still signs
    const row = await database.db
      .selectFrom('custody_keys')
      .selectAll()
      .where('id', '=', stored.id)
      .executeTakeFirstOrThrow();
    expect((await (await custody.signer(row)).sign(new Uint8Array([1, 2, 3]))).length).toBeGreaterThan(64);
  });
});

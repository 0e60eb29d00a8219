import { createPublicKey, verify } from 'node:crypto';
import Fastify from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createSofthsmEnv, initTestToken, type SofthsmEnv } from '../../../../test/support/softhsm.ts';
import { findTokenSlot } from '../../../pkcs11/src/module.ts';
import { p11 } from '../../../pkcs11/src/pkcs11js.ts';
import type { ServiceContext } from '../../src/context.ts';
import { healthRoutes } from '../../src/http/routes/health.ts';
import { type CustodySigner, insertCustodyKey } from '../../src/keys/custody.ts';
import { type CustodyLog, Pkcs11Custody } from '../../src/keys/pkcs11-custody.ts';
import { freshDatabase } from '../support/databases.ts';

/*
 * An HSM drops keyferryd's session (restart, network, C_CloseAllSessions by another user of
 * the module) while the token stays and the PIN is right. C_CloseAllSessions on the slot is
 * that, for SoftHSM: every session of this process on the token ends and the token logs out.
 */

// SoftHSM reads its config at module initialisation: set the store up before anything opens it.
let hsm: SofthsmEnv;
const PIN = '5678';

beforeAll(() => {
  hsm = createSofthsmEnv();
  initTestToken(hsm.conf, { label: 'lost', userPin: PIN });
  initTestToken(hsm.conf, { label: 'lost-pin', userPin: PIN });
});
afterAll(() => hsm?.cleanup());
afterEach(() => {
  vi.restoreAllMocks();
});

type Db = Awaited<ReturnType<typeof freshDatabase>>;

/** Custody on `tokenLabel` with one stored key, and a signer of it made before anything is lost. */
async function custodyWithKey(tokenLabel: string, log?: CustodyLog) {
  const db = await freshDatabase('sqlite');
  const custody = await Pkcs11Custody.open({ module: hsm.module, tokenLabel, pin: PIN, ...(log && { log }) });
  const key = await custody.generate('test:ca');
  await insertCustodyKey(db.db, key);
  const row = await db.db
    .selectFrom('custody_keys')
    .selectAll()
    .where('id', '=', key.id)
    .executeTakeFirstOrThrow();
  const signer = await custody.signer(row);
  await custody.verifyAccess(db.db);
  return { db, custody, row, signer };
}

/** A logger that keeps what the custody writes, as keyferryd's pino would. */
function logLines() {
  const lines: Array<{ level: 'info' | 'warn'; fields: object; message: string }> = [];
  const log: CustodyLog = {
    info: (fields, message) => lines.push({ level: 'info', fields, message }),
    warn: (fields, message) => lines.push({ level: 'warn', fields, message }),
  };
  return { log, lines };
}

/** Ends every session of this process on the token, as an HSM that drops its clients does. */
function loseSessions(tokenLabel: string): void {
  const { lib, slot } = findTokenSlot(hsm.module, tokenLabel);
  lib.C_CloseAllSessions(slot);
}

async function refusal(run: () => Promise<unknown>): Promise<{ code: unknown; message: string }> {
  try {
    await run();
  } catch (error) {
    return { code: (error as { code?: unknown }).code, message: (error as Error).message };
  }
  throw new Error('expected a refusal');
}

async function expectValidSignature(signer: CustodySigner, data: Buffer): Promise<void> {
  const sig = await signer.sign(data);
  const pub = createPublicKey({ key: Buffer.from(signer.publicKeySpki), format: 'der', type: 'spki' });
  expect(verify('sha256', data, pub, sig)).toBe(true);
}

describe('pkcs11 custody after the HSM lost its session (token present, PIN right)', () => {
  let db: Db;
  let custody: Pkcs11Custody;
  let signer: CustodySigner;
  const logged = logLines();

  beforeAll(async () => {
    ({ db, custody, signer } = await custodyWithKey('lost', logged.log));
  });
  afterAll(async () => {
    await custody?.close();
    await db?.dispose();
  });

  it('signs again without a restart: it opens a new session, logs in and finds the key again', async () => {
    await expectValidSignature(signer, Buffer.from('before'));
    expect(logged.lines).toEqual([]);
    loseSessions('lost');
    await expectValidSignature(signer, Buffer.from('after the session was lost'));
    // the operator sees the loss and the recovery in keyferryd's log
    expect(logged.lines).toEqual([
      {
        level: 'warn',
        fields: expect.objectContaining({ token: 'lost', ckr: 'CKR_SESSION_HANDLE_INVALID' }),
        message: "lost the session with token 'lost': opening a new one",
      },
      {
        level: 'info',
        fields: expect.objectContaining({ token: 'lost', ckr: 'CKR_SESSION_HANDLE_INVALID' }),
        message: "opened a new session with token 'lost' and logged in again",
      },
    ]);
    await expectValidSignature(signer, Buffer.from('and after that'));
    await custody.verifyAccess(db.db);
    const key = await custody.generate('test:after');
    expect(key.id).toMatch(/^key_[0-9a-f]{24}$/);
  });

  it('many signatures that meet the lost session at once share one new session and one login', async () => {
    const { lib } = findTokenSlot(hsm.module, 'lost');
    const openSession = vi.spyOn(lib, 'C_OpenSession');
    const login = vi.spyOn(lib, 'C_Login');
    loseSessions('lost');
    const data = Array.from({ length: 8 }, (_, i) => Buffer.from(`concurrent ${i}`));
    const signatures = await Promise.all(data.map((d) => signer.sign(d)));
    const pub = createPublicKey({ key: Buffer.from(signer.publicKeySpki), format: 'der', type: 'spki' });
    for (const [i, sig] of signatures.entries()) expect(verify('sha256', data[i]!, pub, sig)).toBe(true);
    expect(openSession).toHaveBeenCalledTimes(1);
    expect(login).toHaveBeenCalledTimes(1);
    expect(login.mock.calls[0]?.[1]).toBe(p11.CKU_USER);
  });
});

/** GET /readyz of keyferryd's health routes on this database and custody. */
async function readyz(db: Db, custody: Pkcs11Custody): Promise<{ status: number; body: unknown }> {
  const app = Fastify();
  try {
    await healthRoutes(app, { database: db, custody } as unknown as ServiceContext);
    const res = await app.inject({ method: 'GET', url: '/readyz' });
    return { status: res.statusCode, body: res.json() };
  } finally {
    await app.close();
  }
}

describe('pkcs11 custody verifyAccess (/readyz) asks the token', () => {
  it('rejects once the session is lost and the token no longer takes the configured PIN, naming keyCustody.pin', async () => {
    const logged = logLines();
    const { db, custody, signer } = await custodyWithKey('lost-pin', logged.log);
    try {
      expect(await readyz(db, custody)).toEqual({
        status: 200,
        body: { status: 'ready', storage: 'sqlite', custody: 'pkcs11' },
      });
      // someone changes the user PIN on the HSM, then the HSM drops the sessions
      const { lib, slot } = findTokenSlot(hsm.module, 'lost-pin');
      const session = lib.C_OpenSession(slot, p11.CKF_SERIAL_SESSION | p11.CKF_RW_SESSION);
      lib.C_SetPIN(session, PIN, '8765');
      loseSessions('lost-pin');

      const login = vi.spyOn(lib, 'C_Login');
      const { code, message } = await refusal(() => custody.verifyAccess(db.db));
      expect(code).toBe('key_custody_error');
      expect(message).toMatch(
        /^lost the session with token 'lost-pin' \(CKR_SESSION_HANDLE_INVALID\) and could not open it again: wrong PIN for token 'lost-pin' in PKCS#11 module \S+; check keyCustody\.pin — repeated failures can lock the token; keyferryd does not offer a refused PIN again/,
      );
      expect(message).not.toMatch(/PKCS11_|--hsm-|open the token again/);
      expect(login).toHaveBeenCalledTimes(1);
      expect(await readyz(db, custody)).toEqual({
        status: 503,
        body: { status: 'unavailable', reason: 'key custody (pkcs11) cannot use the stored keys' },
      });

      // still not ready, and the refused PIN is not offered again (it would count towards a lock)
      expect((await refusal(() => custody.verifyAccess(db.db))).message).toBe(message);
      expect((await refusal(() => signer.sign(Buffer.from('x')))).message).toBe(message);
      expect(login).toHaveBeenCalledTimes(1);
      // logged once, not at every refused use
      expect(logged.lines.map((l) => [l.level, l.message])).toEqual([
        ['warn', "lost the session with token 'lost-pin': opening a new one"],
        ['warn', message],
      ]);
    } finally {
      await custody.close();
      await db.dispose();
    }
  });
});

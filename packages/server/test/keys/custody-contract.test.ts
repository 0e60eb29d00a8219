import { createDecipheriv, createPrivateKey, createPublicKey, randomBytes, verify } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { keyAlgorithmOf } from '@keyferry/core';
import { openToken } from '@keyferry/pkcs11';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSofthsmEnv, initTestToken, type SofthsmEnv } from '../../../../test/support/softhsm.ts';
import { validateConfig } from '../../src/config/load.ts';
import type { ConfigInput } from '../../src/config/schema.ts';
import { custodyKeyRow, insertCustodyKey, type KeyCustody } from '../../src/keys/custody.ts';
import { openCustody } from '../../src/keys/open-custody.ts';
import { freshDatabase } from '../support/databases.ts';

// SoftHSM reads its config at module initialisation: set the store up before anything opens it.
let hsm: SofthsmEnv;
const PIN = '5678';
let work: string;

beforeAll(() => {
  hsm = createSofthsmEnv();
  initTestToken(hsm.conf, { label: 'custody', userPin: PIN });
  initTestToken(hsm.conf, { label: 'custody-other', userPin: PIN });
  // never logged into successfully: a wrong PIN must be checked by the token itself
  initTestToken(hsm.conf, { label: 'custody-pin', userPin: PIN });
  work = mkdtempSync(join(tmpdir(), 'keyferry-custody-'));
});
afterAll(() => {
  hsm?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

type Db = Awaited<ReturnType<typeof freshDatabase>>;

/** The custody of CA keys alone, as most of the contract is about it. */
async function openCa(c: ReturnType<typeof config>, db: Db): Promise<KeyCustody> {
  return (await openCustody(c, db)).custody;
}

function config(keyCustody: ConfigInput['keyCustody'], dataDir = work) {
  return validateConfig({ dataDir, keyCustody });
}

async function refusal(open: () => Promise<unknown>): Promise<{ code: unknown; message: string }> {
  try {
    await open();
  } catch (error) {
    return { code: (error as { code?: unknown }).code, message: (error as Error).message };
  }
  throw new Error('expected a refusal');
}

async function count(db: Db): Promise<number> {
  const row = await db.db
    .selectFrom('custody_keys')
    .select((eb) => eb.fn.countAll().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

const BACKENDS = {
  soft: (dir: string) => config({ kind: 'soft', masterKeyFile: join(dir, 'master.key') }, dir),
  pkcs11: (dir: string) =>
    config({ kind: 'pkcs11', module: hsm.module, tokenLabel: 'custody', pin: PIN }, dir),
} as const;

describe.each(Object.keys(BACKENDS) as Array<keyof typeof BACKENDS>)('key custody contract: %s', (kind) => {
  let db: Db;
  let dir: string;
  let custody: KeyCustody;

  beforeAll(async () => {
    dir = mkdtempSync(join(work, `${kind}-`));
    db = await freshDatabase('sqlite');
    custody = await openCa(BACKENDS[kind](dir), db);
  });
  afterAll(async () => {
    await custody?.close();
    await db?.dispose();
  });

  it('generates P-256 keys without writing the database, each with its own id', async () => {
    const a = await custody.generate('test:a');
    const b = await custody.generate('test:b');
    expect(custody.backend).toBe(kind);
    expect(a.backend).toBe(kind);
    expect(a.id).toMatch(/^key_[0-9a-f]{24}$/);
    expect(a.id).not.toBe(b.id);
    expect(keyAlgorithmOf(a.publicKeySpki)).toBe('P-256');
    expect(Buffer.from(a.publicKeySpki).equals(Buffer.from(b.publicKeySpki))).toBe(false);
    expect(await count(db)).toBe(0);
  });

  it('signs SHA-256 of the data with the generated key (checked by node:crypto)', async () => {
    const key = await custody.generate('test:sign');
    const signer = await custody.signer(custodyKeyRow(key, new Date()));
    expect(Buffer.from(signer.publicKeySpki).equals(Buffer.from(key.publicKeySpki))).toBe(true);
    const data = randomBytes(100);
    const sig = await signer.sign(data);
    const pub = createPublicKey({ key: Buffer.from(key.publicKeySpki), format: 'der', type: 'spki' });
    expect(verify('sha256', data, pub, sig)).toBe(true);
    expect(verify('sha256', Buffer.concat([data, Buffer.of(0)]), pub, sig)).toBe(false);
  });

  it('finds a stored key again after a restart and refuses a row of the other backend', async () => {
    const key = await custody.generate('test:restart');
    await insertCustodyKey(db.db, key);
    await custody.close();
    custody = await openCa(BACKENDS[kind](dir), db);
    const row = await db.db
      .selectFrom('custody_keys')
      .selectAll()
      .where('id', '=', key.id)
      .executeTakeFirstOrThrow();
    const signer = await custody.signer(row);
    const data = Buffer.from('after restart');
    const pub = createPublicKey({ key: Buffer.from(row.public_key, 'base64'), format: 'der', type: 'spki' });
    expect(verify('sha256', data, pub, await signer.sign(data))).toBe(true);
    const other = kind === 'soft' ? 'pkcs11' : 'soft';
    const { code, message } = await refusal(() => custody.signer({ ...row, id: 'key_x', backend: other }));
    expect(code).toBe('key_custody_error');
    expect(message).toBe(`key key_x is held by the ${other} backend, not ${kind}`);
  });

  it('stores nothing from which the private key can be read without the backend', async () => {
    const row = await db.db.selectFrom('custody_keys').selectAll().executeTakeFirstOrThrow();
    if (kind === 'pkcs11') {
      expect(row.material).toBe(row.id); // a label; the key stays on the token
      const token = openToken({ module: hsm.module, tokenLabel: 'custody', pin: PIN });
      try {
        const attrs = token.keyAttributes({ label: row.material });
        expect(attrs).toMatchObject({ sensitive: true, extractable: false, neverExtractable: true });
      } finally {
        token.close();
      }
    } else {
      // unwrap as the backend does, with the master key the test can read
      const blob = Buffer.from(row.material, 'base64');
      const master = Buffer.from(readFileSync(join(dir, 'master.key'), 'utf8').trim(), 'hex');
      const decipher = createDecipheriv('aes-256-gcm', master, blob.subarray(0, 12));
      decipher.setAAD(Buffer.from(row.id));
      decipher.setAuthTag(blob.subarray(12, 28));
      const pkcs8 = Buffer.concat([decipher.update(blob.subarray(28)), decipher.final()]);
      const key = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
      const spki = createPublicKey(key).export({ format: 'der', type: 'spki' });
      expect(spki.toString('base64')).toBe(row.public_key);
      const scalar = Buffer.from(key.export({ format: 'jwk' }).d as string, 'base64url');
      const stored = Buffer.from(JSON.stringify(row));
      for (const secret of [pkcs8, scalar]) {
        expect(blob.includes(secret)).toBe(false);
        for (const text of [secret.toString('hex'), secret.toString('base64')])
          expect(stored.includes(text)).toBe(false);
      }
    }
  });

  it('refuses to start with a different backend than the stored keys were made with', async () => {
    const other =
      kind === 'soft'
        ? config({ kind: 'pkcs11', module: hsm.module, tokenLabel: 'custody', pin: PIN }, dir)
        : config({ kind: 'soft', masterKeyFile: join(dir, 'other-master.key') }, dir);
    const { code, message } = await refusal(() => openCa(other, db));
    expect(code).toBe('key_custody_error');
    expect(message).toMatch(
      new RegExp(`the database holds \\d+ key\\(s\\) of the ${kind} backend but keyCustody.kind is`),
    );
  });
});

describe('soft custody start-up refusals', () => {
  let db: Db;
  let dir: string;
  const soft = () => config({ kind: 'soft', masterKeyFile: join(dir, 'master.key') }, dir);

  beforeAll(async () => {
    dir = mkdtempSync(join(work, 'soft-refusals-'));
    db = await freshDatabase('sqlite');
    const custody = await openCa(soft(), db);
    expect(statSync(join(dir, 'master.key')).mode & 0o777).toBe(0o600);
    await insertCustodyKey(db.db, await custody.generate('test:stored'));
    await custody.close();
  });
  afterAll(async () => {
    await db?.dispose();
  });

  it('a missing master key while the database holds wrapped keys', async () => {
    const saved = readFileSync(join(dir, 'master.key'), 'utf8');
    rmSync(join(dir, 'master.key'));
    try {
      const { code, message } = await refusal(() => openCa(soft(), db));
      expect(code).toBe('key_custody_error');
      expect(message).toBe(
        `master key file ${join(dir, 'master.key')} is missing but the database holds keys wrapped with it; restore the file from backup`,
      );
    } finally {
      writeFileSync(join(dir, 'master.key'), saved, { mode: 0o600 });
    }
  });

  it('a wrong master key, and one readable by others, and one that is not 64 hex digits', async () => {
    const file = join(dir, 'master.key');
    const saved = readFileSync(file, 'utf8');
    try {
      writeFileSync(file, `${randomBytes(32).toString('hex')}\n`);
      const wrong = await refusal(() => openCa(soft(), db));
      expect(wrong.code).toBe('key_custody_error');
      expect(wrong.message).toMatch(
        /does not open stored key key_[0-9a-f]{24}: it is not the master key this database was made with/,
      );
      chmodSync(file, 0o644);
      const open = await refusal(() => openCa(soft(), db));
      expect(open.message).toMatch(/is readable by others \(mode 644\); run chmod 600 on it$/);
      chmodSync(file, 0o600);
      writeFileSync(file, 'not hex\n');
      const garbage = await refusal(() => openCa(soft(), db));
      expect(garbage.message).toMatch(/must hold 32 bytes as 64 hex digits$/);
    } finally {
      writeFileSync(file, saved);
      chmodSync(file, 0o600);
    }
    const custody = await openCa(soft(), db);
    await custody.close();
  });
});

describe('pkcs11 custody PIN from keyCustody.pinFile', () => {
  const pinFile = (name: string, text: string) => {
    const path = join(work, name);
    writeFileSync(path, text, { mode: 0o600 });
    return path;
  };

  it('opens the token with the first line of the file', async () => {
    const db = await freshDatabase('sqlite');
    try {
      const spec = { kind: 'pkcs11', module: hsm.module, tokenLabel: 'custody' } as const;
      const custody = await openCa(config({ ...spec, pinFile: pinFile('pin', `${PIN}\n`) }), db);
      expect(custody.backend).toBe('pkcs11');
      await custody.close();
      const wrong = await refusal(() =>
        openCa(config({ ...spec, pinFile: pinFile('pin-wrong', '0000\n') }), db),
      );
      expect(wrong.message).toMatch(/^wrong PIN for token 'custody'/);
      const empty = await refusal(() => openCa(config({ ...spec, pinFile: pinFile('pin-empty', '\n') }), db));
      expect(empty).toEqual({
        code: 'config_invalid',
        message: `keyCustody.pinFile ${join(work, 'pin-empty')} is empty: put the PIN on its first line`,
      });
      // a PIN others may read is refused before the token sees it, as a master key would be
      const shared = pinFile('pin-shared', `${PIN}\n`);
      chmodSync(shared, 0o644);
      expect(await refusal(() => openCa(config({ ...spec, pinFile: shared }), db))).toEqual({
        code: 'config_invalid',
        message: `keyCustody.pinFile ${shared} is readable by others (mode 644); run chmod 600 on it`,
      });
    } finally {
      await db.dispose();
    }
  });

  it('takes exactly one of pin and pinFile', () => {
    const spec = { kind: 'pkcs11', module: hsm.module, tokenLabel: 'custody' } as const;
    for (const both of [spec, { ...spec, pin: PIN, pinFile: '/run/credentials/keyferryd/pin' }]) {
      expect(() => config(both)).toThrow(/keyCustody\.pin.*exactly one of the two/);
    }
  });
});

describe('pkcs11 custody start-up refusals', () => {
  it('a wrong PIN', async () => {
    const db = await freshDatabase('sqlite');
    try {
      const { code, message } = await refusal(() =>
        openCa(config({ kind: 'pkcs11', module: hsm.module, tokenLabel: 'custody-pin', pin: '0000' }), db),
      );
      expect(code).toBe('key_custody_error');
      expect(message).toMatch(/^wrong PIN for token 'custody-pin'/);
    } finally {
      await db.dispose();
    }
  });

  it('a token that is not there, naming the tokens that are', async () => {
    const db = await freshDatabase('sqlite');
    try {
      const { code, message } = await refusal(() =>
        openCa(config({ kind: 'pkcs11', module: hsm.module, tokenLabel: 'absent', pin: PIN }), db),
      );
      expect(code).toBe('key_custody_error');
      expect(message).toMatch(/^no token labelled 'absent' in PKCS#11 module .*tokens present: .*'custody'/);
    } finally {
      await db.dispose();
    }
  });

  it('a token that lacks the keys the database names', async () => {
    const db = await freshDatabase('sqlite');
    try {
      const custody = await openCa(
        config({ kind: 'pkcs11', module: hsm.module, tokenLabel: 'custody', pin: PIN }),
        db,
      );
      await insertCustodyKey(db.db, await custody.generate('test:elsewhere'));
      await custody.close();
      const { code, message } = await refusal(() =>
        openCa(config({ kind: 'pkcs11', module: hsm.module, tokenLabel: 'custody-other', pin: PIN }), db),
      );
      expect(code).toBe('key_custody_error');
      expect(message).toMatch(
        /^key key_[0-9a-f]{24} is not on token custody-other: is keyCustody pointing at the token/,
      );
    } finally {
      await db.dispose();
    }
  });

  it('keeps TLS keys in soft custody beside the token, under its own master key file', async () => {
    const db = await freshDatabase('sqlite');
    const dir = mkdtempSync(join(work, 'pkcs11-tls-'));
    const masterKeyFile = join(dir, 'tls-master.key');
    const pkcs11 = () =>
      config({ kind: 'pkcs11', module: hsm.module, tokenLabel: 'custody', pin: PIN, masterKeyFile }, dir);
    try {
      const keys = await openCustody(pkcs11(), db);
      expect(keys.custody.backend).toBe('pkcs11');
      expect(keys.tlsKeys.backend).toBe('soft');
      expect(statSync(masterKeyFile).mode & 0o777).toBe(0o600);
      const tls = await keys.tlsKeys.generate('gateway-tls:demo');
      await insertCustodyKey(db.db, tls);
      const row = custodyKeyRow(tls, new Date());
      const key = await keys.tlsKeys.tlsServerKey(row);
      expect(createPublicKey(key).export({ format: 'der', type: 'spki' }).toString('base64')).toBe(
        row.public_key,
      );
      await keys.close();

      // soft TLS keys are expected beside pkcs11 custody; their master key must be there
      await (await openCustody(pkcs11(), db)).close();
      const saved = readFileSync(masterKeyFile, 'utf8');
      rmSync(masterKeyFile);
      const missing = await refusal(() => openCustody(pkcs11(), db));
      expect(missing).toEqual({
        code: 'key_custody_error',
        message: `master key file ${masterKeyFile} is missing but the database holds keys wrapped with it; restore the file from backup`,
      });
      writeFileSync(masterKeyFile, saved, { mode: 0o600 });
      // a soft key that is not a TLS key means the database was made with soft custody
      const soft = await openCustody(config({ kind: 'soft', masterKeyFile }, dir), db);
      await insertCustodyKey(db.db, await soft.custody.generate('online-ca:demo'));
      await soft.close();
      const foreign = await refusal(() => openCustody(pkcs11(), db));
      expect(foreign).toEqual({
        code: 'key_custody_error',
        message:
          'the database holds 1 key(s) of the soft backend but keyCustody.kind is pkcs11; configure the soft backend',
      });
    } finally {
      await db.dispose();
    }
  });
});

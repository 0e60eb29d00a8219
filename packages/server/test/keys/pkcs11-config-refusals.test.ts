import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS, runBinAsync } from '../../../../test/support/processes.ts';
import { createSofthsmEnv, initTestToken, type SofthsmEnv } from '../../../../test/support/softhsm.ts';
import { openDatabase } from '../../src/storage/database.ts';

/*
 * keyferryd reads its token settings from its config file (keyCustody.module, .tokenLabel,
 * .pin / .pinFile): a refusal of the token names those, never the agent's PKCS11_* variables
 * or the CLI's --hsm-* flags, which keyferryd does not read.
 */

let hsm: SofthsmEnv;
let work: string;
const PIN = '5678';

beforeAll(() => {
  hsm = createSofthsmEnv();
  initTestToken(hsm.conf, { label: 'ca', userPin: PIN });
  work = mkdtempSync(join(tmpdir(), 'keyferry-custody-config-'));
});
afterAll(() => {
  hsm?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

/**
 * `keyferryd -c <file> admin factory create acme` with this keyCustody, on a fresh data dir
 * whose database exists (admin commands do not make one).
 */
async function factoryCreate(name: string, keyCustody: Record<string, unknown>) {
  const dataDir = mkdtempSync(join(work, `${name}-`));
  await (await openDatabase({ kind: 'sqlite' }, dataDir)).close();
  const file = join(work, `${name}.json`);
  // a file holding keyCustody.pin is for its owner (and group) only
  writeFileSync(file, JSON.stringify({ dataDir, storage: { kind: 'sqlite' }, keyCustody }), { mode: 0o600 });
  return runBinAsync('keyferryd', ['-c', file, 'admin', 'factory', 'create', 'acme'], { env: hsm.env });
}

describe('keyferryd names its keyCustody settings when the token refuses', {
  timeout: PROCESS_TEST_TIMEOUT_MS,
}, () => {
  it('a wrong PIN, given as keyCustody.pin or in keyCustody.pinFile', async () => {
    const pinFile = join(work, 'pin');
    writeFileSync(pinFile, '0000\n', { mode: 0o600 });
    for (const pin of [{ pin: '0000' }, { pinFile }]) {
      const res = await factoryCreate('wrong-pin', {
        kind: 'pkcs11',
        module: hsm.module,
        tokenLabel: 'ca',
        ...pin,
      });
      expect(res.status).toBe(2);
      // the setting the PIN came from, and its file
      const setting = 'pin' in pin ? 'keyCustody\\.pin' : `the PIN in keyCustody\\.pinFile ${pinFile}`;
      expect(res.stderr).toMatch(
        new RegExp(
          `^ERROR: keyferryd admin factory create: wrong PIN for token 'ca' in PKCS#11 module \\S+; check ${setting} — repeated failures can lock the token\n$`,
        ),
      );
      expect(res.stderr).not.toMatch(/PKCS11_|--hsm-/);
    }
  });

  it('a token label the module does not have', async () => {
    const res = await factoryCreate('absent-label', {
      kind: 'pkcs11',
      module: hsm.module,
      tokenLabel: 'absent',
      pin: PIN,
    });
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(
      /^ERROR: keyferryd admin factory create: no token labelled 'absent' in PKCS#11 module \S+ \(tokens present: 'ca'\); initialise the token or set keyCustody\.tokenLabel to the label of an existing one\n$/,
    );
    expect(res.stderr).not.toMatch(/PKCS11_|--hsm-/);
  });

  it('a module path that does not load', async () => {
    const res = await factoryCreate('no-module', {
      kind: 'pkcs11',
      module: join(work, 'nonexistent', 'libhsm.so'),
      tokenLabel: 'ca',
      pin: PIN,
    });
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(
      /^ERROR: keyferryd admin factory create: PKCS#11 module \S+\/nonexistent\/libhsm\.so could not be loaded: .*; set keyCustody\.module to the path of the module \.so\n$/,
    );
    expect(res.stderr).not.toMatch(/PKCS11_|--hsm-/);
  });
});

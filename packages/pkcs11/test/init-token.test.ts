import { execFileSync } from 'node:child_process';
import { initToken, openToken, releaseModule } from '@keyferry/pkcs11';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSofthsmEnv, type SofthsmEnv } from '../../../test/support/softhsm.ts';

let env: SofthsmEnv;
const SO_PIN = '12345678';
const USER_PIN = '87654321';

beforeAll(() => {
  // No softhsm2-util here: every token in this file is made by initToken itself.
  env = createSofthsmEnv();
});

afterAll(() => env?.cleanup());

function listTokenSlots(conf = env.conf): string {
  return execFileSync('pkcs11-tool', ['--module', env.module, '--list-token-slots'], {
    env: { ...process.env, SOFTHSM2_CONF: conf },
    encoding: 'utf8',
  });
}

describe('initToken', () => {
  it('initialises the free slot with the exact label and a working user PIN', () => {
    const { serialNumber } = initToken({
      module: env.module,
      label: 'se050-sim',
      soPin: SO_PIN,
      userPin: USER_PIN,
    });
    expect(serialNumber).toMatch(/^[0-9a-f]{16}$/);
    // The label must read back exactly: C_InitToken takes 32 blank-padded bytes, and an
    // unpadded string would leave whatever follows it in memory in the label.
    const slots = listTokenSlots();
    expect(slots).toMatch(/token label\s+: se050-sim\n/);
    expect(slots).toMatch(new RegExp(`serial num\\s+: ${serialNumber}\\n`));
    expect(slots).toMatch(/token flags\s+: [^\n]*PIN initialized/);

    const token = openToken({ module: env.module, tokenLabel: 'se050-sim', pin: USER_PIN });
    token.putData({
      label: 'SE_7fff0206',
      value: Buffer.from('04005001eee3ba1ee96e60047e57da0f6880', 'hex'),
    });
    token.close();
    expect(() => openToken({ module: env.module, tokenLabel: 'se050-sim', pin: SO_PIN })).toThrow(
      /wrong PIN/,
    );
  });

  it('refuses a label an initialised token already has', () => {
    expect(() =>
      initToken({ module: env.module, label: 'se050-sim', soPin: SO_PIN, userPin: USER_PIN }),
    ).toThrow(
      expect.objectContaining({
        code: 'key_custody_error',
        message: expect.stringMatching(/^a token labelled 'se050-sim' already exists/),
      }),
    );
  });

  it('makes a second token beside the first, in the slot SoftHSM frees next', () => {
    initToken({ module: env.module, label: 'second', soPin: SO_PIN, userPin: '11112222' });
    openToken({ module: env.module, tokenLabel: 'second', pin: '11112222' }).close();
    const labels = [...listTokenSlots().matchAll(/token label\s+: (.*)\n/g)].map((m) => m[1]).sort();
    expect(labels).toEqual(['se050-sim', 'second']);
  });

  it('re-initialises a token by label, wiping what it held and setting the new user PIN', () => {
    const before = openToken({ module: env.module, tokenLabel: 'se050-sim', pin: USER_PIN });
    expect(before.getData({ label: 'SE_7fff0206' })).toBeDefined();
    before.close();
    initToken({
      module: env.module,
      label: 'se050-sim',
      soPin: SO_PIN,
      userPin: '55556666',
      reinitialize: true,
    });
    const after = openToken({ module: env.module, tokenLabel: 'se050-sim', pin: '55556666' });
    expect(after.listObjects()).toEqual([]);
    after.close();
    const labels = [...listTokenSlots().matchAll(/token label\s+: (.*)\n/g)].map((m) => m[1]).sort();
    expect(labels).toEqual(['se050-sim', 'second']);
    expect(() =>
      initToken({
        module: env.module,
        label: 'absent',
        soPin: SO_PIN,
        userPin: USER_PIN,
        reinitialize: true,
      }),
    ).toThrow(/0 tokens have that label/);
  });

  it('rejects labels that do not fit the 32-byte field', () => {
    expect(() =>
      initToken({ module: env.module, label: 'x'.repeat(33), soPin: SO_PIN, userPin: USER_PIN }),
    ).toThrow(TypeError);
  });
});

describe('releaseModule', () => {
  it('lets the next open read a different SOFTHSM2_CONF', () => {
    const other = createSofthsmEnv();
    try {
      // SOFTHSM2_CONF now names the new store, but the module still serves the first one.
      expect(() =>
        initToken({ module: env.module, label: 'se050-sim', soPin: SO_PIN, userPin: USER_PIN }),
      ).toThrow(/already exists/);
      releaseModule(env.module);
      initToken({ module: env.module, label: 'se050-sim', soPin: SO_PIN, userPin: USER_PIN });
      expect(listTokenSlots(other.conf)).toMatch(/token label\s+: se050-sim\n/);
    } finally {
      releaseModule(env.module);
      other.cleanup();
    }
  });
});

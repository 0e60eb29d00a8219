import { execFileSync } from 'node:child_process';
import { openToken } from '@keyferry/pkcs11';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSofthsmEnv, initTestToken, type SofthsmEnv } from '../../../test/support/softhsm.ts';

let env: SofthsmEnv;
const PIN = '87654321';

beforeAll(() => {
  env = createSofthsmEnv();
  initTestToken(env.conf);
  initTestToken(env.conf, { label: 'twin' });
  initTestToken(env.conf, { label: 'twin' });
});

afterAll(() => env?.cleanup());

function refusal(open: () => unknown): { code: unknown; message: string } {
  try {
    open();
  } catch (error) {
    return { code: (error as { code?: unknown }).code, message: (error as Error).message };
  }
  throw new Error('expected a refusal');
}

describe('openToken refuses', () => {
  it('a module path that does not load, naming the path and the setting to fix', () => {
    const { code, message } = refusal(() =>
      openToken({ module: '/nonexistent/libnope.so', tokenLabel: 'aktualizr', pin: PIN }),
    );
    expect(code).toBe('key_custody_error');
    expect(message).toMatch(/^PKCS#11 module \/nonexistent\/libnope\.so could not be loaded: .*No such file/);
    expect(message).toContain('set PKCS11_MODULE');
  });

  it('a file that is not a shared library', () => {
    const { code, message } = refusal(() =>
      openToken({ module: '/etc/hostname', tokenLabel: 'x', pin: PIN }),
    );
    expect(code).toBe('key_custody_error');
    expect(message).toMatch(/^PKCS#11 module \/etc\/hostname could not be loaded/);
  });

  it('a token label the module does not have, listing the labels it does have', () => {
    const { code, message } = refusal(() =>
      openToken({ module: env.module, tokenLabel: 'nosuch', pin: PIN }),
    );
    expect(code).toBe('key_custody_error');
    expect(message).toMatch(
      new RegExp(
        `^no token labelled 'nosuch' in PKCS#11 module ${env.module} \\(tokens present: .*\\); ` +
          'initialise the token or set PKCS11_TOKEN_LABEL to the label of an existing one$',
      ),
    );
    // SoftHSM lists its tokens in directory order, so only the set of labels is stable.
    const present = /tokens present: (.*)\)/.exec(message)?.[1]?.split(', ').sort();
    expect(present).toEqual(["'aktualizr'", "'twin'", "'twin'"]);
  });

  it('a label two tokens share', () => {
    const { message } = refusal(() => openToken({ module: env.module, tokenLabel: 'twin', pin: PIN }));
    expect(message).toMatch(/^2 tokens are labelled 'twin'/);
  });

  it('a wrong PIN, without locking the token', () => {
    const { code, message } = refusal(() =>
      openToken({ module: env.module, tokenLabel: 'aktualizr', pin: '0000' }),
    );
    expect(code).toBe('key_custody_error');
    expect(message).toMatch(/^wrong PIN for token 'aktualizr' in PKCS#11 module .*; check PKCS11_PIN/);
    const flags = execFileSync('pkcs11-tool', ['--module', env.module, '--list-token-slots'], {
      env: env.env,
      encoding: 'utf8',
    });
    expect(flags).toMatch(/token label\s+: aktualizr\n(?:.*\n)*?\s+token flags\s+: [^\n]*user PIN count low/);
    expect(flags).not.toMatch(/user PIN locked/);
    openToken({ module: env.module, tokenLabel: 'aktualizr', pin: PIN }).close();
  });

  it('a wrong PIN even while another session holds the token logged in', () => {
    // PKCS#11 answers CKR_USER_ALREADY_LOGGED_IN here without checking the PIN.
    const right = openToken({ module: env.module, tokenLabel: 'aktualizr', pin: PIN });
    try {
      expect(
        refusal(() => openToken({ module: env.module, tokenLabel: 'aktualizr', pin: '11111111' })).message,
      ).toMatch(/^wrong PIN for token 'aktualizr'/);
      const second = openToken({ module: env.module, tokenLabel: 'aktualizr', pin: PIN });
      second.close();
      // Closing one of two sessions must not log out the other.
      expect(right.listObjects()).toEqual([]);
    } finally {
      right.close();
    }
  });

  it("the caller's own settings when it names them, and no other program's", () => {
    const settings = { module: 'hsm.module', tokenLabel: 'hsm.label', pin: 'hsm.pin' };
    const module = refusal(() =>
      openToken({ module: '/nonexistent/libnope.so', tokenLabel: 'aktualizr', pin: PIN, settings }),
    ).message;
    expect(module).toMatch(/could not be loaded: .*; set hsm\.module to the path of the module \.so$/);
    const label = refusal(() => openToken({ module: env.module, tokenLabel: 'nosuch', pin: PIN, settings }));
    expect(label.message).toMatch(
      /; initialise the token or set hsm\.label to the label of an existing one$/,
    );
    const pin = refusal(() =>
      openToken({ module: env.module, tokenLabel: 'aktualizr', pin: '0000', settings }),
    );
    expect(pin.message).toMatch(/; check hsm\.pin — repeated failures can lock the token$/);
    for (const { message } of [{ message: module }, label, pin])
      expect(message).not.toMatch(/PKCS11_|--hsm-/);
    // without settings: the agent's variables and the CLI's flags, as before
    expect(
      refusal(() => openToken({ module: env.module, tokenLabel: 'aktualizr', pin: '0000' })).message,
    ).toMatch(/; check PKCS11_PIN \(or --hsm-pin\) — repeated failures can lock the token$/);
    expect(
      refusal(() => openToken({ module: '/nonexistent/libnope.so', tokenLabel: 'aktualizr', pin: PIN }))
        .message,
    ).toMatch(/; set PKCS11_MODULE \(or --hsm-module\) to the path of the module \.so$/);
    openToken({ module: env.module, tokenLabel: 'aktualizr', pin: PIN }).close();
  });

  it('use after close, as caller misuse', () => {
    const token = openToken({ module: env.module, tokenLabel: 'aktualizr', pin: PIN });
    token.close();
    expect(() => token.listObjects()).toThrow(TypeError);
    expect(() => token.listObjects()).toThrow("token 'aktualizr' is closed; open it again to list objects");
  });
});

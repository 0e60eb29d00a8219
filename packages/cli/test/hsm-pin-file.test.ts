import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { hsmFromOptions } from '../src/pki/root-key.ts';

/** The HSM PIN kept off the command line: --hsm-pin-file or KEYFERRY_HSM_PIN_FILE. */
describe('HSM PIN from a file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keyferry-pin-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text, { mode: 0o600 });
    return path;
  };
  const module = '/usr/lib/softhsm/libsofthsm2.so';

  it('reads the first line of --hsm-pin-file, trimmed', () => {
    const hsmPinFile = file('pin', ' 87654321 \r\nignored\n');
    expect(hsmFromOptions({ hsmModule: module, hsmPinFile, hsmTokenLabel: 'root' }, {})).toEqual({
      module,
      pin: '87654321',
      tokenLabel: 'root',
    });
  });

  it('takes KEYFERRY_HSM_PIN_FILE beside --hsm-module, and ignores it without the HSM flags', () => {
    const env = { KEYFERRY_HSM_PIN_FILE: file('env-pin', '1234\n') };
    expect(hsmFromOptions({ hsmModule: module, hsmTokenLabel: 'root' }, env)?.pin).toBe('1234');
    expect(hsmFromOptions({}, env)).toBeUndefined();
  });

  it('refuses --hsm-pin with --hsm-pin-file, an empty file and a missing one, saying what to do', () => {
    const hsmPinFile = file('empty', '\n');
    expect(() =>
      hsmFromOptions({ hsmModule: module, hsmPin: '1', hsmPinFile, hsmTokenLabel: 'root' }, {}),
    ).toThrow('--hsm-pin and --hsm-pin-file both given: pass the PIN one way (prefer the file)');
    expect(() => hsmFromOptions({ hsmModule: module, hsmPinFile, hsmTokenLabel: 'root' }, {})).toThrow(
      `the PIN file ${hsmPinFile} is empty: put the PIN on its first line`,
    );
    const missing = join(dir, 'nope');
    expect(() =>
      hsmFromOptions({ hsmModule: module, hsmPinFile: missing, hsmTokenLabel: 'root' }, {}),
    ).toThrow(`cannot read the PIN file ${missing}: ENOENT`);
  });

  it('names the missing flags when the PIN is neither given nor in a file', () => {
    expect(() => hsmFromOptions({ hsmModule: module }, {})).toThrow(
      '--hsm-pin and --hsm-token-label missing: the HSM flags --hsm-module, --hsm-pin (or --hsm-pin-file) and --hsm-token-label go together',
    );
  });
});

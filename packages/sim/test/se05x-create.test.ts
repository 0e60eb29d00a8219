import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPem, parseCertificate } from '@keyferry/core';
import { openToken } from '@keyferry/pkcs11';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS, runBin } from '../../../test/support/processes.ts';
import { createSofthsmEnv, type SofthsmEnv } from '../../../test/support/softhsm.ts';

let work: string;
let hsm: SofthsmEnv;
const sim = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  runBin('sim', ['se05x', 'create', ...args], {
    env: { KEYFERRY_DATA_DIR: join(work, 'data'), SOFTHSM2_CONF: hsm.conf, ...env },
  });
const openssl = (args: string[]) =>
  execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'keyferry-sim-'));
  hsm = createSofthsmEnv();
});
afterAll(() => {
  hsm?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

describe('keyferry-sim se05x create --dir', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('makes a soft SE (0600 files) whose identity follows the §7 profile and chains to the vendor CA', () => {
    const dir = join(work, 'se-dir');
    const res = sim([
      '--product',
      '935389312472',
      '--uid',
      '0x04005001eee3ba1ee96e60047e57da0f6880',
      '--dir',
      dir,
    ]);
    expect(res.stderr).toBe('');
    expect(res.stdout).toBe('0x04005001eee3ba1ee96e60047e57da0f6880\n');
    expect(readdirSync(dir).sort()).toEqual(['SE_f0000000.key.pem', 'SE_f0000001.pem', 'uid']);
    for (const f of readdirSync(dir)) expect(statSync(join(dir, f)).mode & 0o777, f).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(readFileSync(join(dir, 'uid'), 'utf8')).toBe('04005001eee3ba1ee96e60047e57da0f6880\n');
    const vendorCa = join(work, 'data', 'sim', 'vendor-ca.pem');
    expect(
      openssl(['verify', '-purpose', 'sslclient', '-CAfile', vendorCa, join(dir, 'SE_f0000001.pem')]),
    ).toContain(': OK');
    const cert = parseCertificate(fromPem(readFileSync(join(dir, 'SE_f0000001.pem'), 'utf8')));
    expect(cert.subjectAttributes).toEqual({
      OU: '935389312472',
      CN: '04005001eee3ba1ee96e60047e57da0f6880',
      serialNumber: '04005001eee3ba1ee96e60047e57da0f6880',
    });
    // the key in the directory is the certificate's
    const pub = openssl(['pkey', '-in', join(dir, 'SE_f0000000.key.pem'), '-pubout']);
    expect(openssl(['x509', '-in', join(dir, 'SE_f0000001.pem'), '-noout', '-pubkey'])).toBe(pub);
    expect(statSync(join(work, 'data', 'sim', 'vendor-ca.key')).mode & 0o777).toBe(0o600);
  });

  it('reuses the vendor CA and makes random 04005001… UIDs', () => {
    const before = readFileSync(join(work, 'data', 'sim', 'vendor-ca.pem'), 'utf8');
    const res = sim(['--product', '935414457472', '--dir', join(work, 'se-2'), '--json']);
    const out = JSON.parse(res.stdout);
    expect(out.uid).toMatch(/^0x04005001[0-9a-f]{28}$/);
    expect(out.deviceId).toBe(BigInt(out.uid).toString().padStart(42, '0'));
    expect(readFileSync(join(work, 'data', 'sim', 'vendor-ca.pem'), 'utf8')).toBe(before);
  });

  it('refuses bad input with one ERROR line and makes nothing', () => {
    const used = join(work, 'used');
    mkdirSync(used);
    writeFileSync(join(used, 'notes'), 'x');
    const cases: Array<[string[], RegExp]> = [
      [['--product', '93538931247', '--dir', join(work, 'a')], /--product 93538931247 is not a 12NC/],
      [
        ['--product', '935389312472', '--uid', '0x1234', '--dir', join(work, 'a')],
        /--uid 0x1234 is not a UID/,
      ],
      [['--product', '935389312472'], /choose where to make it: --pkcs11 or --dir DIR/],
      [['--product', '935389312472', '--dir', used], /is not empty/],
      [['--product', '935389312472', '--pkcs11', '--dir', join(work, 'a')], /cannot be used with/],
    ];
    for (const [args, message] of cases) {
      const res = sim(args);
      expect(res.status, args.join(' ')).not.toBe(0);
      expect(res.stderr).toMatch(/^ERROR: /);
      expect(res.stderr).toMatch(message);
      expect(res.stderr).not.toContain('    at ');
    }
    expect(readdirSync(used)).toEqual(['notes']);
    expect(readdirSync(work)).not.toContain('a');
  });

  it('refuses a --dir that is a file, or under one, naming it', () => {
    const file = join(work, 'a-file');
    writeFileSync(file, 'x');
    expect(sim(['--product', '935389312472', '--dir', file])).toEqual({
      status: 1,
      stdout: '',
      stderr: `ERROR: ${file} is not a directory; a soft secure element needs a new or empty directory\n`,
    });
    const under = join(file, 'se');
    expect(sim(['--product', '935389312472', '--dir', under])).toEqual({
      status: 1,
      stdout: '',
      stderr: `ERROR: cannot make ${under} (ENOTDIR); a soft secure element needs a new or empty directory\n`,
    });
    expect(readFileSync(file, 'utf8')).toBe('x');
  });
});

describe('keyferry-sim se05x create --pkcs11', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('makes token aktualizr with the UID object, a sensitive non-extractable identity key and its certificate', () => {
    const res = sim(['--product', '935389312472', '--pkcs11']);
    expect(res.stderr).toBe('');
    const uid = res.stdout.trim();
    const token = openToken({ module: hsm.module, tokenLabel: 'aktualizr', pin: '87654321' });
    try {
      expect(token.getData({ label: 'SE_7fff0206' })?.toString('hex')).toBe(uid.slice(2));
      expect(token.keyAttributes({ label: 'SE_f0000000' })).toMatchObject({
        sensitive: true,
        extractable: false,
        neverExtractable: true,
        sign: true,
      });
      const cert = parseCertificate(token.getCertificate({ label: 'SE_f0000001' })!);
      expect(cert.subjectAttributes.CN).toBe(uid.slice(2));
      expect(Buffer.from(cert.spki).equals(token.publicKeySpki({ label: 'SE_f0000000' }))).toBe(true);
    } finally {
      token.close();
    }
    // one chip per token store: a second one is refused, the first stays intact
    const again = sim(['--product', '935389312472', '--pkcs11']);
    expect(again.status).not.toBe(0);
    expect(again.stderr).toMatch(/^ERROR: .*already exists/);
  });

  it('names SOFTHSM2_CONF when SoftHSM2 cannot start, and PKCS11_MODULE (no --hsm-module) when the module does not load', () => {
    const missing = join(work, 'absent-softhsm2.conf');
    expect(sim(['--product', '935389312472', '--pkcs11'], { SOFTHSM2_CONF: missing })).toEqual({
      status: 1,
      stdout: '',
      stderr: `ERROR: SOFTHSM2_CONF ${missing} does not exist; point it at a softhsm2.conf (directories.tokendir = <a directory>) or unset it\n`,
    });
    const noTokenDir = join(work, 'no-tokendir.conf');
    writeFileSync(
      noTokenDir,
      `directories.tokendir = ${join(work, 'absent-tokens')}\nobjectstore.backend = file\n`,
    );
    expect(sim(['--product', '935389312472', '--pkcs11'], { SOFTHSM2_CONF: noTokenDir })).toEqual({
      status: 1,
      stdout: '',
      stderr:
        `ERROR: PKCS#11 module ${hsm.module} failed to initialise: CKR_GENERAL_ERROR; check that SOFTHSM2_CONF ` +
        `(${noTokenDir}) names a readable softhsm2.conf whose directories.tokendir exists\n`,
    });
    const module = sim(['--product', '935389312472', '--pkcs11'], {
      PKCS11_MODULE: '/nonexistent/libse05x.so',
    });
    expect(module.status).toBe(1);
    expect(module.stderr).toMatch(
      /^ERROR: PKCS#11 module \/nonexistent\/libse05x\.so could not be loaded: .*; set PKCS11_MODULE to the path of the module \.so\n$/,
    );
    expect(module.stderr).not.toContain('--hsm-module');
  });
});

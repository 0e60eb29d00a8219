import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AgentError } from '../src/agent-error.ts';
import { parseEnvFile } from '../src/settings/env-file.ts';
import { agentSettings, seSettings, settingSource } from '../src/settings/settings.ts';

const dir = mkdtempSync(join(tmpdir(), 'keyferry-agent-settings-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function envFile(text: string): string {
  const path = join(dir, `env-${Math.random().toString(36).slice(2)}`);
  writeFileSync(path, text);
  return path;
}

function refusal(fn: () => unknown): AgentError {
  try {
    fn();
  } catch (error) {
    if (error instanceof AgentError) return error;
    throw error;
  }
  throw new Error('expected a refusal');
}

describe('env file', () => {
  it('reads KEY=VALUE lines, comments, quotes and export', () => {
    const values = parseEnvFile(
      [
        '# lmp-el2go-auto-register settings',
        '',
        'REPOID=abc123',
        'export PKCS11_PIN="12 34"',
        "AKLITE_START_CMD='echo started # not a comment'",
        'SOTA_DIR=/var/sota   # trailing comment',
        'QUOTED="say \\"hi\\""',
      ].join('\n'),
      'f',
    );
    expect(Object.fromEntries(values)).toEqual({
      REPOID: 'abc123',
      PKCS11_PIN: '12 34',
      AKLITE_START_CMD: 'echo started # not a comment',
      SOTA_DIR: '/var/sota',
      QUOTED: 'say "hi"',
    });
  });

  it('refuses a line that is not KEY=VALUE, naming file and line', () => {
    const error = refusal(() => parseEnvFile('REPOID=x\nthis is wrong\n', '/etc/default/x'));
    expect(error.kind).toBe('setting_invalid');
    expect(error.message).toBe('/etc/default/x:2: expected KEY=VALUE, found "this is wrong"');
    expect(refusal(() => parseEnvFile('A="open', 'f')).message).toMatch(/^f:1: unterminated " quote/);
  });

  it('lets the real environment override the file', () => {
    const file = envFile('REPOID=fromfile\nEL2GO_HOSTNAME=abc.device-link.example.com\nDAEMON_INTERVAL=10\n');
    const settings = agentSettings(settingSource(file, { REPOID: 'fromenv' }, true));
    expect(settings.repoId).toBe('fromenv');
    expect(settings.daemonInterval).toBe(10);
    expect(settings.domain).toBe('example.com');
    expect(settings.el2goConnect).toEqual({ host: 'abc.device-link.example.com', port: 443 });
  });

  it('has the LmP defaults', () => {
    const file = envFile('REPOID=r\nEL2GO_HOSTNAME=s.device-link.localhost\n');
    const s = agentSettings(settingSource(file, {}, true));
    expect(s).toMatchObject({
      daemonInterval: 300,
      backend: 'pkcs11',
      pkcs11Pin: '87654321',
      pkcs11TokenLabel: 'aktualizr',
      genericKeypairs: [0x83000044],
      sotaDir: '/var/sota',
      akliteStartCmd: 'systemctl start aktualizr-lite',
      rootCrt: '/usr/share/lmp-el2go-auto-register/root.crt',
      deviceLinkCa: undefined,
    });
  });
});

describe('refusals', () => {
  it('a missing env file, naming it', () => {
    const path = join(dir, 'absent');
    const error = refusal(() => settingSource(path, {}, true));
    expect(error.kind).toBe('env_file_missing');
    expect(error.message).toBe(
      `env file ${path} does not exist; create it (it must set REPOID) or name another with --env-file`,
    );
  });

  it('a missing REPOID, naming the file', () => {
    const file = envFile('EL2GO_HOSTNAME=s.device-link.localhost\n');
    const error = refusal(() => agentSettings(settingSource(file, {}, true)));
    expect(error.kind).toBe('setting_invalid');
    expect(error.message).toMatch(new RegExp(`^REPOID is not set; add REPOID=.* to ${file} `));
  });

  it.each([
    ['DAEMON_INTERVAL=soon', /^DAEMON_INTERVAL is "soon"; give seconds/],
    ['EL2GO_CONNECT_ADDR=localhost', /^EL2GO_CONNECT_ADDR is "localhost"; write host:port/],
    ['GENERIC_KEYPAIRS=0x83000044,zz', /^GENERIC_KEYPAIRS has "zz"/],
    ['SE_BACKEND=tpm', /^SE_BACKEND is "tpm"; use pkcs11 or soft/],
    ['SE_BACKEND=soft', /^SE_BACKEND=soft needs SE_DIR/],
  ])('a malformed %s', (line, message) => {
    const file = envFile(`REPOID=r\nEL2GO_HOSTNAME=s.device-link.localhost\n${line}\n`);
    const error = refusal(() => agentSettings(settingSource(file, {}, true)));
    expect(error.kind).toBe('setting_invalid');
    expect(error.message).toMatch(message);
  });

  it('but uid does without an env file at the default path', () => {
    const settings = seSettings(settingSource(undefined, { PKCS11_MODULE: '/x.so' }, false));
    expect(settings.pkcs11Module).toBe('/x.so');
  });
});

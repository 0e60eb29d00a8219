import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { agentSettings, seSettings, settingSource } from '../src/settings/settings.ts';
import { refusal } from './support/refusal.ts';

const dir = mkdtempSync(join(tmpdir(), 'keyferry-agent-settings-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function envFile(text: string): string {
  const path = join(dir, `env-${Math.random().toString(36).slice(2)}`);
  writeFileSync(path, text);
  return path;
}

describe('env file', () => {
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

  it('an empty variable in the environment leaves the file its value', () => {
    const file = envFile('REPOID=fromfile\nEL2GO_HOSTNAME=abc.device-link.example.com\n');
    const settings = agentSettings(settingSource(file, { REPOID: '' }, true));
    expect(settings.repoId).toBe('fromfile');
  });

  it('a missing REPOID, naming the file', () => {
    const file = envFile('EL2GO_HOSTNAME=s.device-link.localhost\n');
    const error = refusal(() => agentSettings(settingSource(file, {}, true)));
    expect(error.kind).toBe('setting_invalid');
    expect(error.message).toMatch(new RegExp(`^REPOID is not set; add REPOID=.* to ${file} `));
  });

  it.each([
    ['DAEMON_INTERVAL=soon', /^DAEMON_INTERVAL is "soon"; give seconds/],
    ['DAEMON_INTERVAL=0.001', /^DAEMON_INTERVAL is "0.001"; give seconds, 1 to 86400/],
    ['DAEMON_INTERVAL=1e-3', /^DAEMON_INTERVAL is "1e-3"; give seconds, 1 to 86400/],
    ['DAEMON_INTERVAL=0', /^DAEMON_INTERVAL is "0"; give seconds, 1 to 86400/],
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

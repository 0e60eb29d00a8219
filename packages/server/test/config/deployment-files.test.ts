import { execFile } from 'node:child_process';
import { chmodSync, copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.ts';
import { testDir } from '../support/temp-dir.ts';

const DIST = join(import.meta.dirname, '../../dist-files');
const unit = () => readFileSync(join(DIST, 'keyferryd.service'), 'utf8');

/** `Key=value` lines of a unit file's [Service] section. */
function serviceSettings(text: string): Map<string, string[]> {
  const section = text.split(/^\[Service\]$/m)[1]?.split(/^\[/m)[0] ?? '';
  const out = new Map<string, string[]>();
  for (const line of section.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  }
  return out;
}

describe('the shipped keyferryd.service and example config', () => {
  it('is a unit systemd-analyze verifies without a single warning', async () => {
    const dir = testDir('keyferry-unit-');
    // verify checks that ExecStart's program exists: point it at node, keep every other line
    const file = join(dir, 'keyferryd.service');
    writeFileSync(file, unit().replaceAll('/usr/bin/keyferryd', process.execPath));
    const { stdout, stderr } = await promisify(execFile)('systemd-analyze', ['verify', file], {
      encoding: 'utf8',
    });
    expect(stderr).toBe('');
    expect(stdout).toBe('');
  });

  it('is hardened: its own user, a read-only system, a state directory, the master key as a credential', () => {
    const s = serviceSettings(unit());
    expect(s.get('User')).toEqual(['keyferry']);
    expect(s.get('ProtectSystem')).toEqual(['strict']);
    expect(s.get('StateDirectory')).toEqual(['keyferry']);
    expect(s.get('NoNewPrivileges')).toEqual(['yes']);
    expect(s.get('CapabilityBoundingSet')).toEqual(['']);
    expect(s.get('LoadCredential')).toEqual(['master.key:/etc/keyferry/master.key']);
    expect(s.get('Environment')).toContain('KEYFERRY_MASTER_KEY_FILE=%d/master.key');
    expect(s.get('ExecStart')).toEqual(['/usr/bin/keyferryd --config /etc/keyferry/keyferryd.yaml']);
  });

  it('ships an example config that keyferryd accepts, with the master key from the credential', () => {
    // installed as docs/deployment.md says: it holds the database password, so not for every user
    const docs = readFileSync(join(import.meta.dirname, '../../../../docs/deployment.md'), 'utf8');
    const install =
      /^install -m (0[0-7]{3}) -g keyferry packages\/server\/dist-files\/keyferryd\.example\.yaml /m.exec(
        docs,
      );
    expect(install, 'the install line of keyferryd.example.yaml in docs/deployment.md').not.toBeNull();
    const file = join(testDir('keyferry-example-'), 'keyferryd.yaml');
    copyFileSync(join(DIST, 'keyferryd.example.yaml'), file);
    chmodSync(file, Number.parseInt(install![1]!, 8));
    const { config } = loadConfig({
      file,
      env: { KEYFERRY_MASTER_KEY_FILE: '/run/credentials/keyferryd.service/master.key' },
    });
    expect(config.dataDir).toBe('/var/lib/keyferry');
    expect(config.keyCustody).toEqual({
      kind: 'soft',
      masterKeyFile: '/run/credentials/keyferryd.service/master.key',
    });
    expect(config.api.tls).toMatchObject({ cert: '/etc/keyferry/api.pem' });
    expect(config.storage.kind).toBe('postgres');
  });

  it('takes KEYFERRY_MASTER_KEY_FILE with HSM custody too (it wraps the gateway TLS keys)', () => {
    const dir = testDir('keyferry-cfg-');
    const file = join(dir, 'k.yaml');
    writeFileSync(
      file,
      'keyCustody:\n  kind: pkcs11\n  module: /usr/lib/softhsm/libsofthsm2.so\n  tokenLabel: k\n  pin: "1"\n',
      { mode: 0o600 },
    );
    const { config } = loadConfig({
      file,
      env: { KEYFERRY_MASTER_KEY_FILE: '/run/credentials/k/master.key' },
    });
    expect(config.keyCustody).toMatchObject({
      kind: 'pkcs11',
      tokenLabel: 'k',
      masterKeyFile: '/run/credentials/k/master.key',
    });
  });
});

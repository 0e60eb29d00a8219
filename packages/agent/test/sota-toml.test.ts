import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { afterAll, describe, expect, it } from 'vitest';
import { agentSettings, settingSource } from '../src/settings/settings.ts';
import { writeSotaToml } from '../src/sota-toml.ts';

const dir = mkdtempSync(join(tmpdir(), 'keyferry-agent-sota-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function settings(extra: Record<string, string> = {}) {
  const file = join(dir, 'env');
  writeFileSync(file, 'REPOID=abcdef1234\nEL2GO_HOSTNAME=yaytcakbhsmvi0cy.device-link.example.com\n');
  return agentSettings(settingSource(file, { SOTA_DIR: join(dir, 'sota'), ...extra }, true));
}

/** The file as aktualizr-lite reads it: written to disk, then parsed by a TOML parser. */
function writtenToml(s: ReturnType<typeof settings>, soft?: Parameters<typeof writeSotaToml>[1]) {
  rmSync(join(s.sotaDir, 'sota.toml'), { force: true });
  writeSotaToml(s, soft);
  return parseToml(readFileSync(join(s.sotaDir, 'sota.toml'), 'utf8'));
}

describe('sota.toml', () => {
  it('has the sections and keys lmp-el2go-auto-register wrote, pointing at the factory gateway', () => {
    const sota = join(dir, 'sota');
    const gateway = 'https://abcdef1234.ota-lite.example.com:8443';
    expect(writtenToml(settings({ PKCS11_MODULE: '/usr/lib/libckteec.so.0' }))).toEqual({
      tls: { server: gateway, ca_source: 'file', pkey_source: 'pkcs11', cert_source: 'pkcs11' },
      provision: { server: gateway },
      uptane: { repo_server: `${gateway}/repo`, key_source: 'file' },
      pacman: {
        type: 'ostree+compose_apps',
        ostree_server: 'https://abcdef1234.ostree.example.com:8443/ostree',
        packages_file: '/usr/package.manifest',
        tags: 'main',
        compose_apps_root: `${sota}/compose-apps`,
      },
      storage: { type: 'sqlite', path: `${sota}/` },
      import: { tls_cacert_path: '/usr/share/lmp-el2go-auto-register/root.crt' },
      // the gateway pair 0x83000042 / 0x83000043 at the token ids aktualizr-lite looks up
      p11: {
        module: '/usr/lib/libckteec.so.0',
        pass: '87654321',
        tls_pkey_id: '01',
        tls_clientcert_id: '03',
      },
    });
  });

  it('names key and certificate files for the soft backend, with no [p11] section', () => {
    const toml = writtenToml(settings(), {
      keyPath: '/se/SE_83000042.key.pem',
      certificatePath: '/se/SE_83000043.pem',
    });
    expect(toml.tls).toMatchObject({ pkey_source: 'file', cert_source: 'file' });
    expect(toml.import).toEqual({
      tls_cacert_path: '/usr/share/lmp-el2go-auto-register/root.crt',
      tls_pkey_path: '/se/SE_83000042.key.pem',
      tls_clientcert_path: '/se/SE_83000043.pem',
    });
    expect(toml).not.toHaveProperty('p11');
  });

  it('gives aktualizr-lite back exactly the values it was given, however odd their characters', () => {
    const odd = [
      'we"ird\\tag',
      'line\nbreak\ttab\rreturn',
      'bell\u0007 del\u007f',
      'é ✓ 🔐',
      "single ' quote",
      '#hash = [x]',
    ];
    for (const value of odd) {
      const toml = writtenToml(settings({ LMP_FACTORY_TAG: value, PKCS11_PIN: value }), undefined);
      expect((toml.pacman as Record<string, unknown>).tags, JSON.stringify(value)).toBe(value);
      expect((toml.p11 as Record<string, unknown>).pass, JSON.stringify(value)).toBe(value);
    }
    const soft = { keyPath: '/se dir/"k".pem', certificatePath: '/se\\dir/c\n.pem' };
    expect(writtenToml(settings(), soft).import).toMatchObject({
      tls_pkey_path: soft.keyPath,
      tls_clientcert_path: soft.certificatePath,
    });
  });

  it('is written atomically, 0600, and left alone when unchanged', () => {
    const s = settings();
    expect(writeSotaToml(s)).toBe('written');
    const path = join(s.sotaDir, 'sota.toml');
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const before = statSync(path);
    expect(writeSotaToml(s)).toBe('unchanged');
    expect(statSync(path).ino).toBe(before.ino);
    expect(readdirSync(s.sotaDir)).toEqual(['sota.toml']);
    expect(writeSotaToml(settings({ PKCS11_PIN: '1111' }))).toBe('written');
    expect(readFileSync(path, 'utf8')).toContain('pass = "1111"');
    expect(statSync(path).ino).not.toBe(before.ino);
    expect(readdirSync(s.sotaDir)).toEqual(['sota.toml']);
  });
});

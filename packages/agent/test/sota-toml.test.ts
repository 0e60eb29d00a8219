import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { agentSettings, settingSource } from '../src/settings/settings.ts';
import { renderSotaToml, writeSotaToml } from '../src/sota-toml.ts';

const dir = mkdtempSync(join(tmpdir(), 'keyferry-agent-sota-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function settings(extra: Record<string, string> = {}) {
  const file = join(dir, 'env');
  writeFileSync(file, 'REPOID=abcdef1234\nEL2GO_HOSTNAME=yaytcakbhsmvi0cy.device-link.example.com\n');
  return agentSettings(settingSource(file, { SOTA_DIR: join(dir, 'sota'), ...extra }, true));
}

describe('sota.toml', () => {
  it('has the sections and keys lmp-el2go-auto-register wrote, pointing at the factory gateway', () => {
    const sota = join(dir, 'sota');
    expect(renderSotaToml(settings({ PKCS11_MODULE: '/usr/lib/libckteec.so.0' }))).toBe(
      [
        '# Written by keyferry-agent auto-register; rewritten when the provisioning changes.',
        '[tls]',
        'server = "https://abcdef1234.ota-lite.example.com:8443"',
        'ca_source = "file"',
        'pkey_source = "pkcs11"',
        'cert_source = "pkcs11"',
        '',
        '[provision]',
        'server = "https://abcdef1234.ota-lite.example.com:8443"',
        '',
        '[uptane]',
        'repo_server = "https://abcdef1234.ota-lite.example.com:8443/repo"',
        'key_source = "file"',
        '',
        '[pacman]',
        'type = "ostree+compose_apps"',
        'ostree_server = "https://abcdef1234.ostree.example.com:8443/ostree"',
        'packages_file = "/usr/package.manifest"',
        'tags = "main"',
        `compose_apps_root = "${sota}/compose-apps"`,
        '',
        '[storage]',
        'type = "sqlite"',
        `path = "${sota}/"`,
        '',
        '[import]',
        'tls_cacert_path = "/usr/share/lmp-el2go-auto-register/root.crt"',
        '',
        '[p11]',
        'module = "/usr/lib/libckteec.so.0"',
        'pass = "87654321"',
        'tls_pkey_id = "01"',
        'tls_clientcert_id = "03"',
        '',
      ].join('\n'),
    );
  });

  it('names key and certificate files for the soft backend, and escapes TOML strings', () => {
    const text = renderSotaToml(settings({ LMP_FACTORY_TAG: 'we"ird\\tag' }), {
      keyPath: '/se/SE_83000042.key.pem',
      certificatePath: '/se/SE_83000043.pem',
    });
    expect(text).toContain('pkey_source = "file"\ncert_source = "file"\n');
    expect(text).toContain(
      'tls_pkey_path = "/se/SE_83000042.key.pem"\ntls_clientcert_path = "/se/SE_83000043.pem"\n',
    );
    expect(text).not.toContain('[p11]');
    expect(text).toContain('tags = "we\\"ird\\\\tag"');
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

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pkcs11IdFor } from '../src/se/pkcs11-ids.ts';
import {
  agentSettings,
  DEFAULT_ENV_FILE,
  MAX_GENERIC_KEYPAIRS,
  seSettings,
  settingSource,
} from '../src/settings/settings.ts';
import { renderSotaToml } from '../src/sota-toml.ts';
import { refusal } from './support/refusal.ts';

/** Settings an LmP image reads, read the way lmp-el2go-auto-register read them. */
const dir = mkdtempSync(join(tmpdir(), 'keyferry-agent-lmp-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
function file(text: string): string {
  const path = join(dir, `file-${++files}`);
  writeFileSync(path, text);
  return path;
}

const absent = join(dir, 'absent');
const empty = file('');
const noBuildDefaults = { buildDefaults: absent };
const CONNECTION = { REPOID: 'abcdef1234', EL2GO_HOSTNAME: 'yaytcakbhsmvi0cy.device-link.example.com' };

describe('GENERIC_KEYPAIRS', () => {
  it("takes LmP's default spelling 0X83000044 and a comma-separated list of several", () => {
    const env = { GENERIC_KEYPAIRS: '0X83000044,0X83000046, 0x83000048,8300004a' };
    expect(seSettings(settingSource(empty, env, false, noBuildDefaults)).genericKeypairs).toEqual([
      0x83000044, 0x83000046, 0x83000048, 0x8300004a,
    ]);
    expect(seSettings(settingSource(empty, {}, false, noBuildDefaults)).genericKeypairs).toEqual([
      0x83000044,
    ]);
  });

  it("generic pairs past the third get ids 10/11, 12/13 (LmP's decimal digits), not 0a/0b", () => {
    const pairs = [0x83000044, 0x83000046, 0x83000048, 0x8300004a, 0x8300004c];
    const ids = pairs.map((key) =>
      [pkcs11IdFor(key, pairs), pkcs11IdFor(key + 1, pairs)].map((b) => b.toString('hex')),
    );
    expect(ids).toEqual([
      ['04', '05'],
      ['06', '07'],
      ['08', '09'],
      ['10', '11'],
      ['12', '13'],
    ]);
    const many = Array.from({ length: MAX_GENERIC_KEYPAIRS }, (_, i) => 0x83001000 + 2 * i);
    expect(pkcs11IdFor(many.at(-1)! + 1, many).toString('hex')).toBe('99');
    expect(pkcs11IdFor(0x83000042, pairs).toString('hex')).toBe('01');
    expect(pkcs11IdFor(0x83000043, pairs).toString('hex')).toBe('03');
  });

  it(`refuses more than ${MAX_GENERIC_KEYPAIRS} pairs and an id that is not hex`, () => {
    const many = Array.from(
      { length: MAX_GENERIC_KEYPAIRS + 1 },
      (_, i) => `0X${(0x83001000 + 2 * i).toString(16)}`,
    );
    const tooMany = refusal(() =>
      seSettings(settingSource(empty, { GENERIC_KEYPAIRS: many.join(',') }, false, noBuildDefaults)),
    );
    expect(tooMany.kind).toBe('setting_invalid');
    expect(tooMany.message).toMatch(
      /^GENERIC_KEYPAIRS lists 49 key pairs; at most 48 get PKCS#11 ids \(04\/05 to 98\/99\)/,
    );
    expect(
      refusal(() =>
        seSettings(settingSource(empty, { GENERIC_KEYPAIRS: '0X8300004G' }, false, noBuildDefaults)),
      ).message,
    ).toMatch(/^GENERIC_KEYPAIRS has "0X8300004G"; list object ids like 0x83000044/);
  });
});

describe('PKCS11_SOPIN', () => {
  it("has LmP's default and can be set", () => {
    expect(seSettings(settingSource(empty, {}, false, noBuildDefaults)).pkcs11SoPin).toBe('12345678');
    expect(
      seSettings(settingSource(empty, { PKCS11_SOPIN: '00001111' }, false, noBuildDefaults)).pkcs11SoPin,
    ).toBe('00001111');
  });
});

describe('sota.toml [pacman]', () => {
  const pacman = (toml: string) => /\n\[pacman\]\n([\s\S]*?)\n\n/.exec(toml)?.[1]?.split('\n') ?? [];

  it('PACMAN_TYPE is written to [pacman] type', () => {
    const settings = agentSettings(
      settingSource(empty, { ...CONNECTION, PACMAN_TYPE: 'ostree' }, false, noBuildDefaults),
    );
    expect(pacman(renderSotaToml(settings))).toContain('type = "ostree"');
    const lmpDefault = agentSettings(settingSource(empty, CONNECTION, false, noBuildDefaults));
    expect(pacman(renderSotaToml(lmpDefault))).toContain('type = "ostree+compose_apps"');
  });

  it('tags come from LMP_FACTORY_TAG in /etc/os-release when no setting gives them', () => {
    const osRelease = file(
      'ID=lmp\nNAME="Linux-microPlatform"\nLMP_FACTORY="demo"\nLMP_FACTORY_TAG="devel"\n',
    );
    const source = settingSource(empty, CONNECTION, false, noBuildDefaults);
    expect(agentSettings(source, { osRelease }).factoryTag).toBe('devel');
    expect(pacman(renderSotaToml(agentSettings(source, { osRelease })))).toContain('tags = "devel"');
    const set = settingSource(empty, { ...CONNECTION, LMP_FACTORY_TAG: 'main' }, false, noBuildDefaults);
    expect(agentSettings(set, { osRelease }).factoryTag).toBe('main');
    // Not an LmP image (no such file, or no such line): the default.
    expect(agentSettings(source, { osRelease: absent }).factoryTag).toBe('main');
    expect(agentSettings(source, { osRelease: file('ID=debian\n') }).factoryTag).toBe('main');
  });
});

describe('where the settings come from', () => {
  it.skipIf(existsSync(DEFAULT_ENV_FILE))(
    'a missing env file is fine when the variables are in the environment (EnvironmentFile=-)',
    () => {
      const settings = agentSettings(settingSource(undefined, CONNECTION, false, noBuildDefaults));
      expect(settings.repoId).toBe('abcdef1234');
      expect(settings.envFile).toBe(DEFAULT_ENV_FILE);
      const error = refusal(() =>
        agentSettings(
          settingSource(undefined, { EL2GO_HOSTNAME: CONNECTION.EL2GO_HOSTNAME }, false, noBuildDefaults),
        ),
      );
      expect(error.kind).toBe('setting_invalid');
      expect(error.message).toBe(
        `REPOID is not set; add REPOID=<repo id from 'keyferry factories'> to ${DEFAULT_ENV_FILE} ` +
          `(settings from the environment; ${DEFAULT_ENV_FILE} does not exist)`,
      );
    },
  );

  it('a file named with --env-file must exist', () => {
    const error = refusal(() => settingSource(absent, CONNECTION, false, { buildDefaults: absent }));
    expect(error.kind).toBe('env_file_missing');
  });

  it('build-time defaults that cannot be read are named as such', () => {
    const error = refusal(() => settingSource(empty, CONNECTION, false, { buildDefaults: dir }));
    expect(error.kind).toBe('env_file_missing');
    expect(error.message).toBe(
      `the image's build-time defaults ${dir} cannot be read (EISDIR); make the file readable, or remove it (it is optional)`,
    );
  });

  it('EL2GO_HOSTNAME may come from the build-time defaults, below the env file and the environment', () => {
    const buildDefaults = file('EL2GO_HOSTNAME=built0000000000a.device-link.example.com\n');
    const envFile = file('REPOID=abcdef1234\n');
    const built = agentSettings(settingSource(envFile, {}, true, { buildDefaults }));
    expect(built.el2goHostname).toBe('built0000000000a.device-link.example.com');
    expect(built.domain).toBe('example.com');
    const inFile = file('REPOID=abcdef1234\nEL2GO_HOSTNAME=file00000000000a.device-link.example.org\n');
    expect(agentSettings(settingSource(inFile, {}, true, { buildDefaults })).el2goHostname).toBe(
      'file00000000000a.device-link.example.org',
    );
    expect(
      agentSettings(
        settingSource(inFile, { EL2GO_HOSTNAME: 'env000000000000a.device-link.example.net' }, true, {
          buildDefaults,
        }),
      ).el2goHostname,
    ).toBe('env000000000000a.device-link.example.net');
  });
});

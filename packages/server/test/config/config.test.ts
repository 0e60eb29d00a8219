import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, parseListen } from '../../src/config/load.ts';

/** The message `load` is refused with. */
function message(load: () => unknown): string {
  try {
    load();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('not refused');
}

function file(text: string, name = 'keyferry.yaml', mode = 0o644): string {
  const path = join(mkdtempSync(join(tmpdir(), 'kf-cfg-')), name);
  writeFileSync(path, text);
  chmodSync(path, mode); // whatever the umask
  return path;
}

describe('keyferryd configuration', () => {
  it('runs on documented defaults with no file at all', () => {
    const { config, file: used } = loadConfig({ env: {} });
    expect(used).toBeUndefined();
    expect(config.dataDir).toBe('./data');
    expect(config.api.listen).toBe('127.0.0.1:8080');
    expect(config.deviceLink.listen).toBe('127.0.0.1:9443');
    expect(config.gateway.listen).toBe('127.0.0.1:8443');
    expect(config.storage).toEqual({ kind: 'sqlite' });
    expect(config.keyCustody).toEqual({ kind: 'soft' });
    expect(config.domain).toBe('localhost');
    expect(config.demoFactory).toEqual({ name: 'demo' }); // enabled: decided by embedded defaults
    expect(config.el2g.plan).toMatchObject({
      kind: 'evaluation',
      evaluationDays: 30,
      maxDevicesPerYear: 50_000,
    });
    expect(config.crl.heldBytes).toBe(32 * 1024 * 1024);
  });

  it('reads YAML and JSON files', () => {
    const yaml = loadConfig({
      // a password in it: readable by the owner and group only
      file: file(
        'api:\n  listen: 0.0.0.0:9000\nstorage:\n  kind: postgres\n  url: postgres://u:p@h/db\n',
        undefined,
        0o640,
      ),
      env: {},
    });
    expect(yaml.config.api.listen).toBe('0.0.0.0:9000');
    expect(yaml.config.storage).toMatchObject({ kind: 'postgres', url: 'postgres://u:p@h/db', poolSize: 10 });
    const json = loadConfig({ file: file('{"dataDir": "/var/lib/keyferry"}', 'k.json'), env: {} });
    expect(json.config.dataDir).toBe('/var/lib/keyferry');
  });

  it('refuses a file every user may read when it holds the token PIN or a database password', () => {
    const pin = 'keyCustody:\n  kind: pkcs11\n  module: /usr/lib/hsm.so\n  tokenLabel: kf\n  pin: "2580"\n';
    const url = 'storage:\n  kind: postgres\n  url: postgres://keyferry:S3cret@db/keyferry\n';
    const open = file(pin);
    expect(message(() => loadConfig({ file: open, env: {} }))).toBe(
      `config file ${open} holds keyCustody.pin and every user may read it (mode 644): run chmod o-r ${open} ` +
        "(e.g. chown root:keyferry and chmod 640, so the service's group reads it), or move the PIN into keyCustody.pinFile",
    );
    const both = file(pin + url, 'k.yaml', 0o604);
    expect(message(() => loadConfig({ file: both, env: {} }))).toBe(
      `config file ${both} holds keyCustody.pin and a password in storage.url and every user may read it (mode 604): ` +
        `run chmod o-r ${both} (e.g. chown root:keyferry and chmod 640, so the service's group reads it), ` +
        'or move the PIN into keyCustody.pinFile and give the URL in KEYFERRY_STORAGE_URL instead',
    );
    expect(
      message(() =>
        loadConfig({ file: file(url.replace('db/', 'db/?sslmode=require&password=x&')), env: {} }),
      ),
    ).toMatch(/holds a password in storage\.url and every user may read it \(mode 644\)/);
    // owner and group only: read; no secret in it, or the URL from the environment: any mode
    expect(loadConfig({ file: file(pin, 'k.yaml', 0o640), env: {} }).config.keyCustody).toMatchObject({
      pin: '2580',
    });
    expect(loadConfig({ file: file(pin, 'k.yaml', 0o600), env: {} }).config.keyCustody.kind).toBe('pkcs11');
    expect(
      loadConfig({ file: file(url.replace('keyferry:S3cret@', 'keyferry@')), env: {} }).config.storage.kind,
    ).toBe('postgres');
    expect(
      loadConfig({
        file: file('api:\n  listen: 127.0.0.1:0\n'),
        env: { KEYFERRY_STORAGE_URL: 'postgres://u:p@h/db' },
      }).config.storage.kind,
    ).toBe('postgres');
  });

  it('lets the environment override the file', () => {
    const { config } = loadConfig({
      file: file('api:\n  listen: 0.0.0.0:9000\n'),
      env: {
        KEYFERRY_API_LISTEN: '127.0.0.1:0',
        KEYFERRY_DATA_DIR: '/tmp/x',
        KEYFERRY_STORAGE_URL: 'postgres://a@b/c',
      },
    });
    expect(config.api.listen).toBe('127.0.0.1:0');
    expect(config.dataDir).toBe('/tmp/x');
    expect(config.storage.kind).toBe('postgres');
  });

  it('names an unknown key, nested or not', () => {
    expect(() => loadConfig({ file: file('api:\n  lisen: 1.2.3.4:1\n'), env: {} })).toThrowError(
      /unknown key "api.lisen"/,
    );
    expect(() => loadConfig({ file: file('colour: blue\n'), env: {} })).toThrowError(/unknown key "colour"/);
  });

  it('names a bad value and what is expected', () => {
    expect(() => loadConfig({ file: file('api:\n  listen: nowhere\n'), env: {} })).toThrowError(
      /api.listen: expected host:port/,
    );
    expect(() => loadConfig({ file: file('storage:\n  kind: mysql\n'), env: {} })).toThrowError(/storage/);
    expect(() => loadConfig({ file: file('crl:\n  heldBytes: -1\n'), env: {} })).toThrowError(
      /crl.heldBytes: .*>=0/,
    );
    expect(loadConfig({ file: file('crl:\n  heldBytes: 0\n'), env: {} }).config.crl.heldBytes).toBe(0);
    expect(() => loadConfig({ file: file('- a\n- b\n'), env: {} })).toThrowError(/must hold a mapping/);
    expect(() => loadConfig({ file: file('a: [\n'), env: {} })).toThrowError(/not valid YAML/);
    expect(() => loadConfig({ file: '/nonexistent/k.yaml', env: {} })).toThrowError(
      /cannot read config file/,
    );
  });

  it('names where a YAML error is without quoting the line, which may hold the PIN', () => {
    const bad = file(
      'keyCustody:\n  kind: pkcs11\n  module: /usr/lib/hsm.so\n  tokenLabel: kf\n  pin: "S3cretPIN\n',
    );
    const refusal = message(() => loadConfig({ file: bad, env: {} }));
    expect(refusal).toBe(
      `config file ${bad} is not valid YAML/JSON: Missing closing "quote at line 6, column 1`,
    );
    expect(refusal).not.toContain('S3cretPIN');
  });

  it('refuses an unquoted PIN, saying to quote it (YAML would drop its leading zeros)', () => {
    const bare = file(
      'keyCustody:\n  kind: pkcs11\n  module: /usr/lib/hsm.so\n  tokenLabel: kf\n  pin: 0123\n',
    );
    expect(message(() => loadConfig({ file: bare, env: {} }))).toBe(
      `invalid configuration in ${bare}: keyCustody.pin: a PIN is text: quote it (pin: '0123'), YAML reads bare digits as a number and drops leading zeros`,
    );
  });

  it.each(['127.0.0.1:65536', '127.0.0.1:99999', '[::1]:70000'])(
    'refuses the listen address %s, naming the option, at validation',
    (listen) => {
      expect(message(() => loadConfig({ file: file(`api:\n  listen: "${listen}"\n`), env: {} }))).toContain(
        'api.listen: the port is at most 65535 (0: any free port)',
      );
    },
  );

  it('names the environment variable that set a refused option, not the file', () => {
    const settled = file('dataDir: /var/lib/keyferry\n');
    expect(message(() => loadConfig({ file: settled, env: { KEYFERRY_API_LISTEN: 'localhost' } }))).toBe(
      'invalid configuration in the environment: api.listen (from KEYFERRY_API_LISTEN): expected host:port, e.g. 127.0.0.1:8080',
    );
    expect(message(() => loadConfig({ file: settled, env: { KEYFERRY_WORKERS: 'two' } }))).toMatch(
      /^invalid configuration in the environment: workers \(from KEYFERRY_WORKERS\): /,
    );
    expect(
      message(() => loadConfig({ file: settled, env: { KEYFERRY_GATEWAY_LISTEN: '127.0.0.1:70000' } })),
    ).toContain('gateway.listen (from KEYFERRY_GATEWAY_LISTEN): the port is at most 65535');
    // one from the file and one from the environment: the file is named, each option as it came
    const both = message(() =>
      loadConfig({ file: file('api:\n  listen: nowhere\n'), env: { KEYFERRY_DEVICE_LINK_LISTEN: 'x' } }),
    );
    expect(both).toMatch(/^invalid configuration in .*keyferry\.yaml: /);
    expect(both).toContain('api.listen: expected host:port');
    expect(both).toContain('deviceLink.listen (from KEYFERRY_DEVICE_LINK_LISTEN): expected host:port');
  });

  it('splits listen addresses, IPv6 included', () => {
    expect(parseListen('127.0.0.1:8080')).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(parseListen('[::1]:0')).toEqual({ host: '::1', port: 0 });
  });
});

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type DaemonProcess,
  PROCESS_TEST_TIMEOUT_MS,
  type RunResult,
  runBinAsync,
  startKeyferryd,
} from '../support/processes.ts';

/**
 * `keyferry login` as a user runs it: the built CLI against a real keyferryd (its default
 * SQLite in a temp data dir), the demo token keyferryd wrote, and a HOME of the test's own,
 * so the login file lands where `keyferry login --help` says: ~/.config/keyferry/config.json.
 */
describe('keyferry login against a real keyferryd', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let work: string;
  let daemon: DaemonProcess;
  let tokenFile: string;
  let token: string;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-login-e2e-'));
    daemon = await startKeyferryd(join(work, 'data'));
    tokenFile = join(work, 'data', 'demo.token');
    token = readFileSync(tokenFile, 'utf8').trim();
  });
  afterAll(async () => {
    await daemon?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  /** A HOME of its own, and where the login file goes in it. */
  const newHome = (name: string) => {
    const home = join(work, name);
    mkdirSync(home);
    return { home, file: join(home, '.config', 'keyferry', 'config.json') };
  };
  /**
   * The CLI with that HOME and nothing from the environment of whoever runs the tests: an
   * empty variable counts as unset, for the settings and for where the login file is.
   */
  const keyferry = (home: string, args: string[]): Promise<RunResult> =>
    runBinAsync('keyferry', args, {
      env: {
        HOME: home,
        XDG_CONFIG_HOME: '',
        KEYFERRY_CONFIG_FILE: '',
        KEYFERRY_SERVER: '',
        KEYFERRY_FACTORY: '',
        KEYFERRY_TOKEN: '',
        KEYFERRY_TOKEN_FILE: '',
      },
    });
  /** What a file is, to see that a refused login left it as it was. */
  const snapshot = (file: string) => {
    const stat = statSync(file);
    return { ino: stat.ino, mode: (stat.mode & 0o777).toString(8), text: readFileSync(file, 'utf8') };
  };

  /** `keyferry login` with the demo token: its line, and the file it saved (0600, server, factory, token). */
  const expectLoggedIn = async (home: string, file: string) => {
    const login = await keyferry(home, ['login', '--server', daemon.listen.api, '--token-file', tokenFile]);
    expect(login).toEqual({
      status: 0,
      stdout: `Logged in to ${daemon.listen.api} as factory demo; saved to ${file}\n`,
      stderr: '',
    });
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual({
      server: daemon.listen.api,
      factory: 'demo',
      token,
    });
  };

  it('saves server, factory and token in ~/.config/keyferry/config.json (0600), and the next commands use them', async () => {
    const { home, file } = newHome('saved');
    await expectLoggedIn(home, file);
    expect(statSync(join(home, '.config', 'keyferry')).mode & 0o777).toBe(0o700);

    // no --server, -f or -t: all three from the file (the default server would be 127.0.0.1:8080)
    const factories = await keyferry(home, ['factories', '--json']);
    expect(factories.stderr).toBe('');
    expect(factories.status).toBe(0);
    expect((JSON.parse(factories.stdout) as Array<{ name: string }>).map((f) => f.name)).toEqual(['demo']);
    const tokens = await keyferry(home, ['tokens', 'list', '--json']);
    expect(tokens.stderr).toBe('');
    expect(tokens.status).toBe(0);
    expect((JSON.parse(tokens.stdout) as Array<{ id: string }>).map((t) => t.id)).toEqual([
      token.split('_')[1],
    ]);

    // --json says the same, and a second login over the file replaces it (still 0600)
    const again = await keyferry(home, ['login', '--json', '--token-file', tokenFile]);
    expect(again.stderr).toBe('');
    expect(again.status).toBe(0);
    expect(JSON.parse(again.stdout)).toEqual({ server: daemon.listen.api, factory: 'demo', file });
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('with a token keyferryd does not know: exit 1, its refusal, and no file written', async () => {
    const { home } = newHome('unknown-token');
    const res = await keyferry(home, ['login', '--server', daemon.listen.api, '-t', 'kf_nope']);
    expect(res).toEqual({
      status: 1,
      stdout: '',
      stderr: 'ERROR: the API token is not valid: check it, or create a new one (unauthenticated)\n',
    });
    // not even the directory
    expect(existsSync(join(home, '.config'))).toBe(false);
  });

  it('with a revoked token, or a factory the token cannot see: exit 1, and the saved login left as it was', async () => {
    const { home, file } = newHome('kept');
    expect(
      (await keyferry(home, ['login', '--server', daemon.listen.api, '--token-file', tokenFile])).status,
    ).toBe(0);
    const before = snapshot(file);

    // a real token, made and revoked with the saved login
    const created = await keyferry(home, ['tokens', 'create', '--scope', 'read', '--description', 'revoked']);
    expect(created.status).toBe(0);
    const revokedToken = created.stdout.trim();
    const id = revokedToken.split('_')[1] as string;
    expect((await keyferry(home, ['tokens', 'revoke', id])).status).toBe(0);
    const revoked = await keyferry(home, ['login', '--server', daemon.listen.api, '-t', revokedToken]);
    expect(revoked.stdout).toBe('');
    expect(revoked.stderr).toMatch(
      new RegExp(
        `^ERROR: the API token ${id} was revoked at \\S+: use another token \\(unauthenticated\\)\\n$`,
      ),
    );
    expect(revoked.status).toBe(1);
    expect(snapshot(file)).toEqual(before);

    const otherFactory = await keyferry(home, [
      'login',
      '--server',
      daemon.listen.api,
      '--token-file',
      tokenFile,
      '-f',
      'acme',
    ]);
    expect(otherFactory).toEqual({
      status: 1,
      stdout: '',
      stderr: 'ERROR: this token cannot see factory acme; it sees: demo\n',
    });
    expect(snapshot(file)).toEqual(before);
  });

  it('over a login file that cannot be read, writes a new one, as the refusal of every other command says (was: refused by that file)', async () => {
    const { home, file } = newHome('broken');
    mkdirSync(join(home, '.config', 'keyferry'), { recursive: true });
    writeFileSync(file, '{"server": "https://keyferry.example.com", "token": "kf_');
    const refused = await keyferry(home, ['factories']);
    expect(refused).toEqual({
      status: 1,
      stdout: '',
      stderr: `ERROR: the login file ${file} is not valid JSON: fix it or remove it (keyferry login writes a new one)\n`,
    });
    await expectLoggedIn(home, file);
    expect((await keyferry(home, ['factories'])).status).toBe(0);
  });
});

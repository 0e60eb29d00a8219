import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BINS, runBinAsync } from '../support/processes.ts';

const UID = '0x04005001eee3ba1ee96e60047e57da0f6880';
const home = mkdtempSync(join(tmpdir(), 'keyferry-usage-'));
// no server is needed: each of these is refused before any request
const env = { HOME: home, XDG_CONFIG_HOME: join(home, 'xdg'), KEYFERRY_SERVER: 'http://127.0.0.1:9' };
const keyferry = (args: string[]) => runBinAsync('keyferry', args, { env });

describe('every program has --version (was: unknown option)', () => {
  afterAll(() => rmSync(home, { recursive: true, force: true }));

  it.each(Object.keys(BINS) as Array<keyof typeof BINS>)(
    '%s --version prints its package.json version',
    {
      timeout: 60_000,
    },
    async (bin) => {
      const pkg = join(BINS[bin], '../../package.json');
      const { version } = JSON.parse(readFileSync(pkg, 'utf8')) as { version: string };
      for (const flag of ['--version', '-V']) {
        const res = await runBinAsync(bin, [flag], { env });
        expect(res).toEqual({ status: 0, stdout: `${version}\n`, stderr: '' });
      }
    },
  );
});

describe("commander's messages say what the user most likely meant", () => {
  it('a mistyped subcommand of el2g devices is named, with the likely one (was: too many arguments for list)', {
    timeout: 60_000,
  }, async () => {
    const res = await keyferry(['el2g', 'devices', 'shwo', UID]);
    expect(res).toEqual({
      status: 2,
      stdout: '',
      stderr: "ERROR: unknown subcommand 'shwo'; did you mean 'show'?\n",
    });
    const gateway = await keyferry(['devices', 'lsit']);
    expect(gateway.stderr).toBe("ERROR: unknown subcommand 'lsit'; did you mean 'list'?\n");
    const explicit = await keyferry(['el2g', 'devices', 'list', UID]);
    expect(explicit.stderr).toBe(`ERROR: 'list' takes no arguments, got '${UID}'\n`);
    const far = await keyferry(['el2g', 'devices', 'frobnicate']);
    expect(far.stderr).toBe("ERROR: unknown subcommand 'frobnicate'; --help lists them\n");
  });

  it.each(['delete', 'add'])(
    'devices %s with a device id but no 12NC says a 12NC is needed first (was: missing device-ids, or invalid product id)',
    { timeout: 60_000 },
    async (command) => {
      const res = await keyferry(['el2g', 'devices', command, UID]);
      expect(res).toEqual({
        status: 2,
        stdout: '',
        stderr:
          `ERROR: ${UID} is a device id: a 12NC (product id) is needed first, as in ` +
          `keyferry el2g devices ${command} 935389312472 ${UID} (keyferry el2g status lists the factory's product ids)\n`,
      });
    },
  );

  it('devices delete with a 12NC and no id asks for an id', { timeout: 60_000 }, async () => {
    const res = await keyferry(['el2g', 'devices', 'delete', '935389312472']);
    expect(res).toEqual({
      status: 2,
      stdout: '',
      stderr: 'ERROR: name at least one device id after the 12NC\n',
    });
  });
});

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../packages/server/src/storage/database.ts';
import {
  factoryId,
  seedGatewayObjects,
  sequentialIds,
} from '../../packages/server/test/allowlist/fixtures.ts';
import { startTestService, type TestService } from '../../packages/server/test/support/service.ts';
import {
  type DaemonProcess,
  PROCESS_TEST_TIMEOUT_MS,
  runBin,
  runBinAsync,
  startKeyferryd,
} from '../support/processes.ts';

const GUIDE_HEX = '0x04005001eee3ba1ee96e60047e57da0f6880';
const GUIDE_DEC = '348555492004256518532939906410866457667712';
const FORMS = '0x followed by 36 hex digits, or 42 decimal digits';

/** The guide's "Enlisting devices" with keyferry in place of fioctl: real keyferryd, real CLI. */
describe('keyferry el2g devices against the keyferryd process', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let work: string;
  let daemon: DaemonProcess;
  let cli: (args: string[]) => ReturnType<typeof runBin>;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-allowlist-'));
    const data = join(work, 'data');
    daemon = await startKeyferryd(data);
    const token = readFileSync(join(data, 'demo.token'), 'utf8').trim();
    cli = (args) =>
      runBin('keyferry', ['--server', daemon.listen.api, '-t', token, '-f', 'demo', ...args], {
        env: { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg') },
      });
    // the gateway's secure objects, as config-device-gateway leaves them, written beside the daemon
    const database = await openDatabase({ kind: 'sqlite', path: join(data, 'keyferry.db') }, data);
    await seedGatewayObjects(database.db, await factoryId(database.db));
    await database.close();
  });
  afterAll(async () => {
    await daemon?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("devices add with one id prints nothing on success, as fioctl; the list has fioctl's two columns", () => {
    const add = cli(['el2g', 'devices', 'add', '935389312472', GUIDE_HEX]);
    expect(add.stderr).toBe('');
    expect(add.status).toBe(0);
    expect(add.stdout).toBe('');
    const list = cli(['el2g', 'devices']);
    expect(list.status).toBe(0);
    expect(list.stdout).toBe(
      'GROUP             ID\n' + '-----             --\n' + `fio-935389312472  ${GUIDE_DEC}\n`,
    );
    expect(cli(['el2g', 'devices', 'list']).stdout).toBe(list.stdout);
    const wide = cli(['el2g', 'devices', '--wide']);
    expect(wide.stdout).toBe(
      'GROUP             ID                                          LAST CONNECTION\n' +
        '-----             --                                          ---------------\n' +
        `fio-935389312472  ${GUIDE_DEC}\n`,
    );
    expect(cli(['el2g', 'devices', 'list', '--wide']).stdout).toBe(wide.stdout);
    // already present is success too: still silent
    expect(cli(['el2g', 'devices', 'add', '935389312472', GUIDE_DEC])).toEqual({
      status: 0,
      stdout: '',
      stderr: '',
    });
  });

  it('shows Hardware Type, 12NC and the assigned objects in GENERATION_ON_CONNECTION', () => {
    const show = cli(['el2g', 'devices', 'show', GUIDE_HEX]);
    expect(show.stderr).toBe('');
    expect(show.stdout).toBe(
      'Hardware Type: SE050C2HQ1/Z01V3\n' +
        'Hardware 12NC: 935389312472\n' +
        'Secure Objects:\n' +
        '\tNAME                      TYPE         STATUS\n' +
        '\t----                      ----         ------\n' +
        '\tfio-device-gateway-ca-kp  KEYPAIR      GENERATION_ON_CONNECTION\n' +
        '\tfio-device-gateway-ca     CERTIFICATE  GENERATION_ON_CONNECTION\n',
    );
  });

  it('refuses a bad id before any request, naming it and both forms', () => {
    const bad = `${GUIDE_HEX}0`;
    const res = cli([
      'el2g',
      'devices',
      'add',
      '935389312472',
      '0x04005001eee3ba1ee96e60047e57da0f6881',
      bad,
    ]);
    expect(res.status).not.toBe(0);
    expect(res.stderr).toBe(`ERROR: invalid device id "${bad}": use ${FORMS}\n`);
    expect(cli(['el2g', 'devices']).stdout.trimEnd().split('\n')).toHaveLength(3);
    const nc = cli(['el2g', 'devices', 'add', '93538931247', GUIDE_HEX]);
    expect(nc.stderr).toMatch(/^ERROR: invalid product id "93538931247": a 12NC is 12 decimal digits/);
  });

  it('an id of the right form but too large a value is told that its value does not fit, not to use the form it used', async () => {
    const big = '0xff005001eee3ba1ee96e60047e57da0f6880';
    const res = cli(['el2g', 'devices', 'add', '935389312472', big, '0x12']);
    expect(res.status).toBe(2);
    expect(res.stderr).toBe(
      `ERROR: invalid device id "${big}": its value does not fit the 42-digit decimal form EdgeLock 2GO ids use (the largest is 0x0b7abc627050305adf14a3d9e3ffffffffff); SE05x UIDs start 0x04: read the UID again (keyferry-agent uid); invalid device id "0x12": use ${FORMS}\n`,
    );
    expect(res.stderr).not.toContain(`"${big}": use`);
    const show = cli(['el2g', 'devices', 'show', big]);
    expect(show.stderr).toMatch(
      /^ERROR: invalid device id "0xff0050\w+": its value does not fit the 42-digit/,
    );
    // the API says the same to a client that does not check first
    const token = readFileSync(join(work, 'data', 'demo.token'), 'utf8').trim();
    const api = await fetch(`${daemon.listen.api}/ota/factories/demo/el2g-proxy/devices/${big}/product`, {
      headers: { 'osf-token': token },
    });
    expect(api.status).toBe(400);
    expect(((await api.json()) as { detail: string }).detail).toContain(
      'its value does not fit the 42-digit decimal form',
    );
  });

  it('says when a device is in the other group, and exits non-zero', () => {
    const res = cli(['el2g', 'devices', 'add', '--production', '935389312472', GUIDE_HEX]);
    expect(res.stdout).toBe('');
    expect(res.stderr).toBe(
      `ERROR: ${GUIDE_HEX}: in another group (fio-935389312472); remove it there first\n`,
    );
    expect(res.status).toBe(1);
    // several ids: a line each (keyferry's addition)
    const [one, two] = ['0x04005001eee3ba1ee96e60047e57da0f6882', '0x04005001eee3ba1ee96e60047e57da0f6883'];
    const several = cli(['el2g', 'devices', 'delete', '--production', '935389312472', one, two]);
    expect(several).toEqual({
      status: 0,
      stdout: `${one}: not on the allow-list\n${two}: not on the allow-list\n`,
      stderr: '',
    });
  });

  it('shows the plan and its usage after the four status sections', () => {
    const res = cli(['el2g', 'status']);
    expect(res.status).toBe(0);
    const plan = res.stdout.indexOf('# Plan\n');
    expect(plan).toBeGreaterThan(res.stdout.indexOf('# Intermediate CAs'));
    // how each certificate object renews, between fioctl's sections and the plan
    const renewal = res.stdout.indexOf('# Certificate Renewal\n');
    expect(renewal).toBeGreaterThan(res.stdout.indexOf('# Intermediate CAs'));
    expect(res.stdout.slice(renewal, plan)).toBe(
      '# Certificate Renewal\n' +
        '\tNAME                   RENEWED VALIDITY  RENEW FROM\n' +
        '\t----                   ----------------  ----------\n' +
        '\tfio-device-gateway-ca  365 days          30 days before expiry\n\n',
    );
    expect(res.stdout.slice(plan)).toMatch(
      /^# Plan\nKind: evaluation\nEvaluation: 30 days from \d{4}-\d\d-\d\d, ends \S+\nSubscription year: \S+ to \S+\nDevices: 1 of 50000 used this subscription year\nPer device: at most 2 key pairs and 2 certificates\n$/,
    );
  });

  it('--json add/delete print the answers and still exit 1 when a device was refused (was: exit 0)', () => {
    const one = cli(['--json', 'el2g', 'devices', 'add', '--production', '935389312472', GUIDE_HEX]);
    expect(one.stderr).toBe(
      `ERROR: ${GUIDE_HEX}: in another group (fio-935389312472); remove it there first\n`,
    );
    expect(one.status).toBe(1);
    expect(JSON.parse(one.stdout)).toEqual([
      expect.objectContaining({ status: 'in-other-group', group: 'fio-935389312472' }),
    ]);
    const other = '0x04005001eee3ba1ee96e60047e57da0f6884';
    const several = cli([
      '--json',
      'el2g',
      'devices',
      'add',
      '--production',
      '935389312472',
      GUIDE_HEX,
      other,
    ]);
    expect(several.stderr).toBe('ERROR: 1 of 2 devices not added (see their status in the JSON)\n');
    expect(several.status).toBe(1);
    expect(JSON.parse(several.stdout).map((a: { status: string }) => a.status)).toEqual([
      'in-other-group',
      'added',
    ]);
    const removed = cli(['--json', 'el2g', 'devices', 'delete', '--production', '935389312472', other]);
    expect(removed.status).toBe(0);
    expect(removed.stderr).toBe('');
    expect(JSON.parse(removed.stdout)).toEqual([expect.objectContaining({ status: 'deleted' })]);
  });

  it('deletes the device: gone from the list, show says it is not allow-listed', () => {
    const res = cli(['el2g', 'devices', 'delete', '935389312472', GUIDE_DEC]);
    expect(res).toEqual({ status: 0, stdout: '', stderr: '' });
    expect(cli(['el2g', 'devices']).stdout.trimEnd().split('\n')).toHaveLength(2);
    const show = cli(['el2g', 'devices', 'show', GUIDE_HEX]);
    expect(show.status).not.toBe(0);
    expect(show.stderr).toMatch(
      /^ERROR: device 348555492004256518532939906410866457667712 is not on this factory's allow-list/,
    );
  });
});

/** 51,000 ids from a file on a commercial 50,000 plan: progress, counts, and the 51st thousand refused. */
describe('keyferry el2g devices add --file at fleet scale', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  let svc: TestService;
  let work: string;
  const cli = (args: string[]) =>
    runBinAsync('keyferry', ['--server', svc.url, '-t', svc.token, '-f', 'demo', ...args], {
      env: { HOME: work, XDG_CONFIG_HOME: join(work, 'xdg') },
    });
  const rows = async () =>
    Number(
      (
        await svc.service.ctx.database.db
          .selectFrom('devices')
          .select((eb) => eb.fn.countAll().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'keyferry-import-'));
    svc = await startTestService('sqlite', {
      el2g: { plan: { kind: 'commercial', maxDevicesPerYear: 50_000 } },
    });
  });
  afterAll(async () => {
    await svc?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('refuses an empty file and a binary file clearly, sending nothing', async () => {
    writeFileSync(join(work, 'empty.txt'), '');
    writeFileSync(join(work, 'blob.bin'), Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0x02, 0x00, 0x01]));
    const empty = await cli(['el2g', 'devices', 'add', '935389312472', '--file', join(work, 'empty.txt')]);
    expect(empty.status).not.toBe(0);
    expect(empty.stderr).toMatch(/^ERROR: \S+empty\.txt is empty: put one device id a line/);
    const blob = await cli(['el2g', 'devices', 'add', '935389312472', '--file', join(work, 'blob.bin')]);
    expect(blob.stderr).toMatch(/^ERROR: \S+blob\.bin is not a text file \(a NUL byte at offset 5\)/);
    expect(await rows()).toBe(0);
  });

  it('imports 51,000 ids with progress; 50,000 added, the 51st thousand refused by the device quota', async () => {
    const ids = sequentialIds(51_000, 0xf1ee7);
    const lines = [
      '\uFEFFid,site',
      ...ids.map((id, i) => `${id},line-${i}`),
      'not-an-id,x',
      `${ids[7]},again`,
    ];
    const file = join(work, 'fleet.csv');
    writeFileSync(file, lines.join('\r\n') + '\r\n');
    const res = await cli(['el2g', 'devices', 'add', '935389312472', '--file', file]);
    const progress = res.stderr.split('\n').filter((l) => / ids sent \(\d+%\)$/.test(l));
    expect(progress.length).toBeGreaterThanOrEqual(10);
    expect(progress.at(-1)).toBe('51000/51000 ids sent (100%)');
    expect(res.stdout).toMatch(
      new RegExp(
        '^Added: 50000\\nAlready present: 0\\nDuplicates in file: 1 \\(line 51003 repeats line 9\\)\\n' +
          'Invalid: 1 \\(line 51002\\)\\nIn another group: 0\\n' +
          'Refused: 1000 \\(1000 by device_quota_exceeded: device quota reached: limit devices-per-year, ' +
          '50000 of 50000 devices used in the subscription year \\S+ to \\S+\\)\\n$',
      ),
    );
    expect(res.stderr).toContain(`ERROR: 1001 ids from ${file} were not added (see the summary)`);
    expect(res.status).toBe(1);
    expect(await rows()).toBe(50_000);

    const again = await cli(['el2g', 'devices', 'add', '935389312472', ids[50_500]!]);
    expect(again.stdout).toBe('');
    expect(again.stderr).toMatch(/: refused: device quota reached: limit devices-per-year, 50000 of 50000/);
  });

  it("lists all 50,000 page by page in fioctl's table", async () => {
    const res = await cli(['el2g', 'devices']);
    expect(res.status).toBe(0);
    const out = res.stdout.trimEnd().split('\n');
    expect(out).toHaveLength(50_002);
    expect(out[0]).toBe('GROUP             ID');
    expect(out.slice(2).every((l) => /^fio-935389312472 {2}[0-9]{42}$/.test(l))).toBe(true);
    expect(new Set(out.slice(2)).size).toBe(50_000);
  });
});

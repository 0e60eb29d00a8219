import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PROCESS_TEST_TIMEOUT_MS, REPO_ROOT, type RunResult, runCommand } from '../support/processes.ts';

/**
 * `npm run bench`, `bench:issue`, `bench:rotation` and `bench:allowlist` must not rot: they run end
 * to end with tiny counts (a real keyferryd, a few devices through the device-link, the floor
 * server, cfssl) and end with their RESULT line; --help and nonsense parameters behave, in the
 * other benches too. No figure is asserted — a
 * bench is not a test.
 */
function bench(script: string, args: string[]): Promise<RunResult> {
  return new Promise((resolve) => {
    // the suite's global setup has built the programs; rebuilding would rewrite dist/ under other tests
    const child = spawn(process.execPath, ['--import', 'tsx', `bench/${script}`, '--no-build', ...args], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ status: code ?? -1, stdout, stderr }));
  });
}

const NUMBER = '[0-9]+(?:\\.[0-9]+)?';
const PROVISIONING_RESULT = new RegExp(
  `^RESULT devices=[0-9]+ devices_per_s=${NUMBER} server_ms_per_device=${NUMBER} client_ms_per_device=${NUMBER} ` +
    `floor_ms_per_handshake=${NUMBER} floor_ratio=${NUMBER} p50_ms=${NUMBER} p99_ms=${NUMBER} ` +
    `service_p99_ms=${NUMBER} rss_mb=${NUMBER} workers=[0-9]+ storage=(sqlite|postgres) nodes=[0-9]+ db_ms_per_device=(${NUMBER}|n/a) device_floor_ms=(${NUMBER}|n/a) statements_per_device=${NUMBER}$`,
  'm',
);
const ROTATION_RESULT = new RegExp(
  `^RESULT devices=[0-9]+ revoked=[0-9]+ crl_bytes=[0-9]+ first_ms_per_rekey=${NUMBER} ` +
    `last_ms_per_rekey=${NUMBER} growth=(${NUMBER}|n/a) storage=(sqlite|postgres) db_ms_per_rekey=(${NUMBER}|n/a) p99_ms=${NUMBER}$`,
  'm',
);
const ISSUE_RESULT = new RegExp(
  `^RESULT keyferry_certs_per_s=${NUMBER} cfssl_certs_per_s=(${NUMBER}|n/a) ratio=(${NUMBER}|n/a) ` +
    `cfssl_stored_certs_per_s=(${NUMBER}|n/a) ratio_stored=(${NUMBER}|n/a) ` +
    `inprocess_ms_per_cert=${NUMBER} request_floor_ms=${NUMBER} ratio_ceiling=(${NUMBER}|n/a)$`,
  'm',
);

const TINY = [
  '--devices',
  '6',
  '--concurrency',
  '3',
  '--service-devices',
  '2',
  '--warmup',
  '2',
  // enough that the floor's CPU is more than a few of /proc's 10 ms ticks (6 could read as 0)
  '--handshakes',
  '30',
];

/** The RESULT lines of a run, parsed: every field by name. */
function results(stdout: string): Record<string, string>[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('RESULT '))
    .map((l) =>
      Object.fromEntries(
        l
          .slice('RESULT '.length)
          .split(' ')
          .map((kv) => kv.split('=', 2)),
      ),
    );
}

describe('npm run bench (smoke, tiny counts)', () => {
  it('provisions every device and ends with the RESULT line; --cpu-prof prints where the CPU went', {
    timeout: 180_000,
  }, async () => {
    const profiles = mkdtempSync(join(tmpdir(), 'keyferry-bench-prof-'));
    const run = await bench('provisioning.ts', [...TINY, '--cpu-prof', profiles]).finally(() =>
      rmSync(profiles, { recursive: true, force: true }),
    );
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout, run.stdout).toMatch(PROVISIONING_RESULT);
    expect(run.stdout).toMatch(
      /^RESULT devices=6 .* workers=1 storage=sqlite nodes=1 db_ms_per_device=n\/a device_floor_ms=.* statements_per_device=/m,
    );
    expect(run.stdout).toContain('6 devices provisioned (0 failed)');
    expect(run.stdout).toMatch(/^floor: +30 mTLS handshakes/m);
    expect(run.stdout).toMatch(/^ +the same with a device's three requests .* × the floor/m);
    // progress goes to stderr, so a silent run cannot pass for a slow one
    expect(run.stderr).toContain('[bench] load: 6 devices, 3 in flight');
    // the profile of the load: keyferryd's own process, its statements seen, the rows against /proc
    expect(run.stdout).toMatch(
      /^profile: +ms of keyferryd CPU per device while measured, from [1-9][0-9]* profiles? /m,
    );
    expect(run.stdout).toMatch(/^ +SQLite statements run \(better-sqlite3, commits included\) +[0-9.]+$/m);
    const [result] = results(run.stdout);
    const proc = run.stdout.match(/^ +keyferryd's CPU per device \(\/proc\) +([0-9.]+)$/m)?.[1];
    expect(Number(proc)).toBeCloseTo(Number(result!.server_ms_per_device), 2);
  });

  it('--workers 2 provisions through two worker processes, CPU read from all three', {
    timeout: 240_000,
  }, async () => {
    const run = await bench('provisioning.ts', [...TINY, '--workers', '2']);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout, run.stdout).toMatch(PROVISIONING_RESULT);
    expect(results(run.stdout)).toMatchObject([
      { devices: '6', workers: '2', storage: 'sqlite', nodes: '1' },
    ]);
    expect(run.stdout).toMatch(/^server: .*\/proc\/<pid>\/stat of 3 processes/m);
  });

  it('--storage postgres --nodes 2 measures SQLite, then PostgreSQL on two nodes', {
    timeout: 360_000,
  }, async () => {
    // 40 devices, not 6: the database server's CPU under load must be many of /proc's 10 ms
    // ticks (6 devices, ~15 ms over some twenty backends, now and then read as none)
    const run = await bench('provisioning.ts', [
      ...TINY,
      '--devices',
      '40',
      '--storage',
      'postgres',
      '--nodes',
      '2',
    ]);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout.match(new RegExp(PROVISIONING_RESULT, 'gm')), run.stdout).toHaveLength(2);
    expect(results(run.stdout)).toMatchObject([
      { devices: '40', workers: '1', storage: 'sqlite', nodes: '1' },
      { devices: '40', workers: '1', storage: 'postgres', nodes: '2' },
    ]);
    // every device of both measurements provisioned, none failed
    expect(run.stdout.split('40 devices provisioned (0 failed)')).toHaveLength(3);
    expect(run.stdout).toMatch(/^server: .*\/proc\/<pid>\/stat of 2 processes/m);
    expect(run.stderr).toContain('[bench] starting a throwaway PostgreSQL cluster');
    // the PostgreSQL server's own CPU is measured too, and it did work for the devices
    const [, postgres] = results(run.stdout);
    expect(Number(postgres!.db_ms_per_device)).toBeGreaterThan(0);
    expect(run.stdout).toMatch(/^database: [0-9.]+ ms CPU per device \(the PostgreSQL server's processes/m);
  });

  it('bench:issue issues for both CAs and ends with the RESULT line', { timeout: 180_000 }, async () => {
    const run = await bench('issue.ts', ['--csrs', '5', '--connections', '5', '--seconds', '0.05']);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(ISSUE_RESULT);
    expect(run.stdout).toMatch(/^keyferry +[0-9.]+ certificates\/s, .* 5 issued, 0 failed/m);
    // cfssl is one of the system packages the test command installs: both peers ran
    expect(run.stdout).toMatch(
      /^cfssl +[0-9.]+ certificates\/s, .* 5 issued, 0 failed \(cfssl .* plain HTTP\)/m,
    );
    expect(run.stdout).toMatch(
      /^cfssl\+db +[0-9.]+ certificates\/s, .* 5 issued, 0 failed \(cfssl .* mutual TLS/m,
    );
    expect(run.stdout).toMatch(/^in-process keyferry alone \(no network, no TLS, no storage/m);
    expect(run.stdout).toMatch(/^floor +[0-9.]+ ms server CPU per request: a minimal Node HTTPS server/m);
    expect(run.stdout).toMatch(/^ceiling +cfssl's whole request [0-9.]+ ms \/ \(keyferry's CSR verify/m);
  });

  it('bench:rotation rekeys every device in batches, the CRL growing, and ends with the RESULT line', {
    timeout: 180_000,
  }, async () => {
    const run = await bench('rotation.ts', [
      '--devices',
      '12',
      '--batches',
      '3',
      '--concurrency',
      '4',
      '--warmup',
      '2',
      '--revoked',
      '20',
    ]);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(ROTATION_RESULT);
    // each batch's rekeys revoked as many certificates (after the 20 added and the warm-up's 2),
    // and the CRL grows
    expect(run.stdout).toMatch(
      /^batch +1: 4 rekeys \(0 failed\), [0-9.]+ rekeys\/s, p99 [0-9.]+ ms,.* CRL then 26 entries/m,
    );
    expect(run.stdout).toMatch(/^batch +3: 4 rekeys \(0 failed\).* CRL then 34 entries/m);
    const [result] = results(run.stdout);
    expect(result!.revoked).toBe('34');
    expect(result!.devices).toBe('14');
    expect(result!.storage).toBe('sqlite');
    expect(result!.db_ms_per_rekey).toBe('n/a');
    const crls = [...run.stdout.matchAll(/entries, ([0-9]+) bytes/g)].map((m) => Number(m[1]));
    expect(crls).toHaveLength(3);
    expect(crls[0]!).toBeLessThan(crls[1]!);
    expect(crls[1]!).toBeLessThan(crls[2]!);
    const refused = await bench('rotation.ts', ['--devices', '2', '--batches', '3']);
    expect(refused.status).toBe(2);
    expect(refused.stderr).toContain('--batches 3 is more than --devices 2');
    const noStorage = await bench('rotation.ts', ['--postgres-url', 'postgres://x/y']);
    expect(noStorage.status).toBe(2);
    expect(noStorage.stderr).toContain('--postgres-url needs --storage postgres');
    const notCount = await bench('rotation.ts', ['--revoked', 'many']);
    expect(notCount.status).toBe(2);
    expect(notCount.stderr).toContain('--revoked takes a non-negative integer');
  });

  it('bench:rotation --storage postgres rekeys on PostgreSQL and prints the database CPU per rekey', {
    timeout: 180_000,
  }, async () => {
    const run = await bench('rotation.ts', [
      '--devices',
      '8',
      '--batches',
      '2',
      '--concurrency',
      '4',
      '--warmup',
      '2',
      '--revoked',
      '10',
      '--storage',
      'postgres',
    ]);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(ROTATION_RESULT);
    expect(run.stdout).toMatch(/^keyferry rotation bench — node v[0-9.]+, postgres,/m);
    expect(run.stdout).toMatch(/^batch +2: 4 rekeys \(0 failed\).* ms the database's; CRL then 20 entries/m);
    const [result] = results(run.stdout);
    expect(result!.storage).toBe('postgres');
    expect(result!.revoked).toBe('20');
    expect(result!.db_ms_per_rekey).toMatch(/^[0-9]+\.[0-9]+$/);
  });

  it('--help prints the options and exits 0', { timeout: 60_000 }, async () => {
    const run = await bench('provisioning.ts', ['--help']);
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^Usage: npm run bench/);
    for (const option of [
      '--devices N',
      '--concurrency N',
      '--handshakes N',
      '--workers N',
      '--storage sqlite|postgres',
      '--nodes N',
    ])
      expect(run.stdout).toContain(option);
  });

  it('refuses nonsense parameters with exit 2, naming what was wrong', { timeout: 60_000 }, async () => {
    const cases: [string[], string][] = [
      [['--devices', 'abc'], '--devices takes a positive integer, not "abc"'],
      [['--concurrency', '0'], '--concurrency takes a positive integer, not "0"'],
      [['--storage', 'mysql'], '--storage takes one of sqlite, postgres, not "mysql"'],
      [['--bogus'], "Unknown option '--bogus'"],
      [['500'], "Unexpected argument '500'"],
      [['--postgres-url', 'postgres://x/y'], '--postgres-url needs --storage postgres'],
      [['--nodes', '2'], '--nodes 2 needs --storage postgres'],
      [['--storage', 'postgres', '--nodes', 'two'], '--nodes takes a positive integer, not "two"'],
    ];
    const runs = await Promise.all(cases.map(([args]) => bench('provisioning.ts', args)));
    runs.forEach((run, i) => {
      expect(run.status).toBe(2);
      expect(run.stderr).toContain(cases[i]![1]);
      expect(run.stderr).toContain('Run with --help for the options.');
      expect(run.stdout).toBe('');
    });
    const issue = await bench('issue.ts', ['--seconds', 'soon']);
    expect(issue.status).toBe(2);
    expect(issue.stderr).toContain('--seconds takes a positive number, not "soon"');
    const profile = await bench('issue.ts', ['--cpu-prof', '']);
    expect(profile.status).toBe(2);
    expect(profile.stderr).toContain('--cpu-prof takes a directory');
    expect(profile.stdout).toBe('');
  });
});

const TSX = join(REPO_ROOT, 'node_modules/tsx/dist/cli.mjs');

describe('npm run bench:startup (smoke, one run)', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('prints built and tsx figures for the three programs, and the agent target line', async () => {
    const run = await runCommand(process.execPath, [TSX, 'bench/startup.ts', '--runs', '1']);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^PROGRAM +BUILT \(bin\/, dist\/\) +TSX \(source\) +TARGET$/m);
    const figure = String.raw`\d+\.\d\d s +\d+ MB`;
    for (const label of ['keyferry-agent --help', 'keyferry --help', 'keyferryd until listen.json']) {
      expect(run.stdout).toMatch(new RegExp(`^${label} +${figure} +${figure}`, 'm'));
    }
    // the figures are not asserted (a bench is not a test), only that the target is judged
    expect(run.stdout).toMatch(/^keyferry-agent --help .*≤ 0\.4 s, ≤ 60 MB: (met|NOT met)$/m);
  });
});

const ALLOWLIST_RESULT = new RegExp(
  `^RESULT ids=2000 runs=1 import_ids_per_s=${NUMBER} import_server_ms_per_1000=${NUMBER} ` +
    `list_rows_per_s=${NUMBER} list_server_ms_per_page=${NUMBER} first_page_server_ms=${NUMBER} ` +
    `bar_ratio=${NUMBER} rss_mb=${NUMBER}$`,
  'm',
);

describe('npm run bench:allowlist (smoke, 2,000 ids)', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it('imports, lists and fetches the first page on a keyferryd of its own, ending with its RESULT line', async () => {
    const run = await bench('allowlist.ts', ['--ids', '2000', '--runs', '1', '--first-pages', '5']);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(ALLOWLIST_RESULT);
    expect(run.stdout).toMatch(/^import: .* ms CPU per 1,000 ids .*x the bar$/m);
    expect(run.stdout).toMatch(/^first page: .* ms CPU per fetch .*5 fetches a run\)$/m);
  });

  it('prints its options and refuses what it cannot measure', async () => {
    const help = await bench('allowlist.ts', ['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^Usage: npm run bench:allowlist/);
    expect(help.stdout).toContain('--first-pages N');
    for (const [args, message] of [
      [['--ids', '0'], '--ids takes a positive integer, not "0"'],
      [['--runs', 'x'], '--runs takes a positive integer, not "x"'],
      [['--devices', '5'], "Unknown option '--devices'"],
    ] as const) {
      const refused = await bench('allowlist.ts', [...args]);
      expect(refused.status, args.join(' ')).toBe(2);
      expect(refused.stderr).toContain(message);
      expect(refused.stderr).toContain('Run with --help for the options.');
      expect(refused.stdout).toBe('');
    }
  });
});

describe('the other benches take --help and refuse nonsense', { timeout: PROCESS_TEST_TIMEOUT_MS }, () => {
  it.each([
    [
      'console.ts',
      'npm run bench:console',
      ['--devices', '2.5'],
      '--devices takes a positive integer, not "2.5"',
    ],
    ['startup.ts', 'npm run bench:startup', ['--runs', '0'], '--runs takes a positive integer, not "0"'],
    [
      'issuance.ts',
      'npx tsx bench/issuance.ts',
      ['--seconds', '0'],
      '--seconds takes a positive number, not "0"',
    ],
  ])('%s', async (script, usage, args, message) => {
    const help = await runCommand(process.execPath, [TSX, `bench/${script}`, '--help']);
    expect(help.status).toBe(0);
    expect(help.stdout.startsWith(`Usage: ${usage}`)).toBe(true);
    for (const [wrong, why] of [
      [args, message],
      [['--frobnicate'], "Unknown option '--frobnicate'"],
    ] as const) {
      const refused = await runCommand(process.execPath, [TSX, `bench/${script}`, ...wrong]);
      expect(refused.status, wrong.join(' ')).toBe(2);
      expect(refused.stderr).toContain(why);
      expect(refused.stdout).toBe('');
    }
  });
});

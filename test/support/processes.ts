import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const REPO_ROOT = resolve(import.meta.dirname, '../..');
export const BINS = {
  keyferryd: join(REPO_ROOT, 'packages/server/bin/keyferryd.js'),
  keyferry: join(REPO_ROOT, 'packages/cli/bin/keyferry.js'),
  agent: join(REPO_ROOT, 'packages/agent/bin/keyferry-agent.js'),
  sim: join(REPO_ROOT, 'packages/sim/bin/keyferry-sim.js'),
} as const;

/*
 * Time limits for tests that run programs. They only catch a hang: on this 2-core machine,
 * shared with other jobs, one CLI run can take seconds and a keyferryd start tens of seconds,
 * so no test may count on a speed, and each limit is far above what a loaded machine needs.
 * A program's own limit is below its test's, so a hang fails with the program's output.
 */
/** One program run to completion (a CLI command, an agent run); then it is killed. */
export const PROGRAM_TIMEOUT_MS = 120_000;
/** Until a started process says it is ready (keyferryd's listen.json, an emulator's endpoints). */
export const READY_TIMEOUT_MS = 120_000;
/** A test that runs programs or starts keyferryd: `describe(name, { timeout: … }, …)`. */
export const PROCESS_TEST_TIMEOUT_MS = 600_000;

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command to completion without blocking the test's process (its servers, timers and
 * vitest's own time limit keep running). Killed after `timeoutMs`; `signal` then says so.
 */
export function runCommand(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {},
): Promise<RunResult & { signal: NodeJS.Signals | null }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, {
      env: options.env ?? process.env,
      cwd: options.cwd ?? REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: options.timeoutMs ?? PROGRAM_TIMEOUT_MS,
      killSignal: 'SIGKILL',
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolvePromise({ status: code ?? -1, signal, stdout, stderr }));
  });
}

/** The counters of a harness's `RESULT a=1 b=2` line (npm run chaos, npm run fuzz), by name. */
export function resultCounters(stdout: string): Record<string, string> {
  const line = stdout.split('\n').find((l) => l.startsWith('RESULT ')) ?? '';
  return Object.fromEntries(
    line
      .slice('RESULT '.length)
      .split(' ')
      .map((kv) => kv.split('=') as [string, string]),
  );
}

/**
 * Runs one of the four programs to completion, as a user would from a shell. It blocks the
 * test's process: for the quick commands only (and never against a server in this process).
 */
export function runBin(
  bin: keyof typeof BINS,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string } = {},
): RunResult {
  const res = spawnSync(process.execPath, [BINS[bin], ...args], {
    encoding: 'utf8',
    env: { ...process.env, KEYFERRY_DEBUG: '', ...options.env },
    cwd: options.cwd ?? REPO_ROOT,
    input: options.input ?? '',
    timeout: PROGRAM_TIMEOUT_MS,
  });
  return { status: res.status ?? -1, stdout: res.stdout, stderr: res.stderr };
}

/** Async variant for programs that must run while the test keeps control (same result shape). */
export async function runBinAsync(
  bin: keyof typeof BINS,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<RunResult> {
  const { status, stdout, stderr } = await runCommand(process.execPath, [BINS[bin], ...args], {
    env: { ...process.env, KEYFERRY_DEBUG: '', ...options.env },
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
  });
  return { status, stdout, stderr };
}

export interface DaemonProcess {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  listen: { api: string; deviceLink?: string; gateway?: string };
  stop(): Promise<number | null>;
}

/**
 * Starts the real keyferryd process (one worker unless `env.KEYFERRY_WORKERS` says more) with all listeners on free ports (port 0) and waits for
 * `<dataDir>/listen.json`, which it writes once every listener is ready.
 */
export async function startKeyferryd(
  dataDir: string,
  options: { env?: NodeJS.ProcessEnv; args?: string[]; nodeArgs?: string[] } = {},
): Promise<DaemonProcess> {
  const listenFile = join(dataDir, 'listen.json');
  rmSync(listenFile, { force: true }); // a previous run's file must not pass for this one's
  const child = spawn(
    process.execPath,
    [...(options.nodeArgs ?? []), BINS.keyferryd, ...(options.args ?? [])],
    {
      env: {
        ...process.env,
        KEYFERRY_DATA_DIR: dataDir,
        KEYFERRY_API_LISTEN: '127.0.0.1:0',
        KEYFERRY_DEVICE_LINK_LISTEN: '127.0.0.1:0',
        KEYFERRY_GATEWAY_LISTEN: '127.0.0.1:0',
        KEYFERRY_LOG_LEVEL: 'warn',
        // one process unless a test asks for more (KEYFERRY_WORKERS): the machine is small
        KEYFERRY_WORKERS: '1',
        ...options.env,
      },
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  // listen.json appears when the listeners are bound; the printed addresses come right after
  while (!existsSync(listenFile) || !stdout.includes('Management API:')) {
    if (child.exitCode !== null) throw new Error(`keyferryd exited ${child.exitCode}: ${stderr}${stdout}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`keyferryd did not become ready: ${stderr}${stdout}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    listen: JSON.parse(readFileSync(listenFile, 'utf8')),
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

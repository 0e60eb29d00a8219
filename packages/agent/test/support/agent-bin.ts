import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { BINS, PROGRAM_TIMEOUT_MS, REPO_ROOT, type RunResult } from '../../../../test/support/processes.ts';

// `node --` as the bin's shebang does: Node 20 would otherwise take `--env-file` for itself.
const argv = (args: string[]) => ['--', BINS.agent, ...args];

/** Runs keyferry-agent to completion as the device's shell or systemd would. */
export function runAgent(args: string[], env: NodeJS.ProcessEnv = {}): RunResult {
  const res = spawnSync(process.execPath, argv(args), {
    encoding: 'utf8',
    env: { ...process.env, KEYFERRY_DEBUG: '', ...env },
    cwd: REPO_ROOT,
    input: '',
    timeout: PROGRAM_TIMEOUT_MS,
  });
  return { status: res.status ?? -1, stdout: res.stdout, stderr: res.stderr };
}

/**
 * The same, without blocking the test (when a server in this process must answer it).
 * `onStderr` sees the stderr collected so far after each chunk (to wait for a log line).
 */
export function runAgentAsync(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  onStderr?: (stderr: string) => void,
): Promise<RunResult & { signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, argv(args), {
      env: { ...process.env, KEYFERRY_DEBUG: '', ...env },
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => {
      stderr += d;
      onStderr?.(stderr);
    });
    child.on('close', (code, signal) => resolve({ status: code ?? -1, signal, stdout, stderr }));
  });
}

/** Starts keyferry-agent (e.g. `daemon`) and returns the child, for a test that stops it itself. */
export function spawnAgent(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  return spawn(process.execPath, argv(args), {
    env: { ...process.env, KEYFERRY_DEBUG: '', ...env },
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

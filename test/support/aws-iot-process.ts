import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BINS, READY_TIMEOUT_MS, REPO_ROOT } from './processes.ts';

/** What `keyferry-sim aws-iot` writes to <state dir>/endpoints.json. */
export interface AwsIotEndpointsFile {
  controlUrl: string;
  mqttEndpoint: string;
  serverCaFile: string;
  region: string;
  accessKeyId: string;
}

export interface AwsIotProcess {
  readonly endpoints: AwsIotEndpointsFile;
  stdout: () => string;
  stderr: () => string;
  /** SIGTERM, then the exit code. */
  stop(): Promise<number | null>;
}

/**
 * Starts the real `keyferry-sim aws-iot` process on free ports with `stateDir` and waits for
 * its endpoints.json (written once both listeners are up).
 */
export async function startAwsIotProcess(stateDir: string, args: string[] = []): Promise<AwsIotProcess> {
  const file = join(stateDir, 'endpoints.json');
  rmSync(file, { force: true });
  const child = spawn(process.execPath, [BINS.sim, 'aws-iot', '--state-dir', stateDir, ...args], {
    env: { ...process.env, KEYFERRY_DEBUG: '' },
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  // endpoints.json is written just before the "control plane:" lines are printed.
  while (!existsSync(file) || !stdout.includes('endpoints:')) {
    if (child.exitCode !== null)
      throw new Error(`keyferry-sim aws-iot exited ${child.exitCode}: ${stderr}${stdout}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`keyferry-sim aws-iot did not become ready: ${stderr}${stdout}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    endpoints: JSON.parse(readFileSync(file, 'utf8')) as AwsIotEndpointsFile,
    stdout: () => stdout,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

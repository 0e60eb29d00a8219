import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { BINS } from '../../../../test/support/processes.ts';
import { parseEnvFile } from '../../src/settings/env-file.ts';

/** What systemd takes from a unit's [Service] to start it: the env file and the command line. */
export interface UnitExec {
  /** `EnvironmentFile=` without its `-`; `optional` when it had one. */
  readonly environmentFile: { readonly path: string; readonly optional: boolean } | undefined;
  readonly execStart: readonly string[];
}

export function unitExec(unit: string): UnitExec {
  const value = (name: string) => new RegExp(`^${name}=(.*)$`, 'm').exec(unit)?.[1]?.trim();
  const envFile = value('EnvironmentFile');
  const execStart = value('ExecStart')?.split(/\s+/) ?? [];
  if (execStart.length === 0) throw new Error('the unit has no ExecStart=');
  return {
    environmentFile:
      envFile === undefined
        ? undefined
        : { path: envFile.replace(/^-/, ''), optional: envFile.startsWith('-') },
    execStart,
  };
}

/** The PATH systemd gives services, with the directory of this Node in front (the bin's shebang). */
const SERVICE_PATH = `${dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`;

export interface StartedUnit {
  readonly done: Promise<{ status: number; stdout: string; stderr: string }>;
  readonly pid: number | undefined;
}

/**
 * Starts a unit's ExecStart the way systemd does, with every absolute path of the unit moved
 * under `root` (the image's filesystem in a temp dir): the program at ExecStart's path is the
 * agent's bin (as an image recipe links it there), the environment is the service PATH plus
 * what systemd reads from `EnvironmentFile=` (parsed with the grammar systemd documents:
 * env-file.test.ts) plus `dropIn` — what a drop-in's `Environment=` lines would add. Nothing of
 * the test's own environment leaks in.
 */
export function startLikeSystemd(options: {
  readonly unit: string;
  readonly root: string;
  readonly dropIn: Readonly<Record<string, string>>;
  readonly onOutput?: (stdout: string, stderr: string) => void;
}): StartedUnit {
  const exec = unitExec(options.unit);
  const [program = '', ...args] = exec.execStart;
  const installed = join(options.root, program);
  if (!existsSync(installed)) {
    mkdirSync(dirname(installed), { recursive: true });
    symlinkSync(BINS.agent, installed);
  }
  const fromFile: Record<string, string> = {};
  if (exec.environmentFile) {
    const path = join(options.root, exec.environmentFile.path);
    if (existsSync(path) || !exec.environmentFile.optional) {
      Object.assign(fromFile, Object.fromEntries(parseEnvFile(readFileSync(path, 'utf8'))));
    }
  }
  const child = spawn(installed, args, {
    env: { PATH: SERVICE_PATH, ...fromFile, ...options.dropIn },
    cwd: options.root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    stdout += d;
    options.onOutput?.(stdout, stderr);
  });
  child.stderr.on('data', (d) => {
    stderr += d;
    options.onOutput?.(stdout, stderr);
  });
  const done = new Promise<{ status: number; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code) => resolve({ status: code ?? -1, stdout, stderr })),
  );
  return { done, pid: child.pid };
}

/**
 * What a bench reads about a server process from /proc (Linux): CPU time, which stays right
 * when other work shares the machine, and peak resident memory; and core pinning with taskset.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/** /proc/<pid>/stat counts in clock ticks; Linux reports them at USER_HZ, 100 on every arch Node runs on. */
const USER_HZ = 100;

/** User + system CPU of a process (all its threads) in ms. */
export function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // fields after the command name (which may hold spaces) start at ") "
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1000) / USER_HZ;
}

/** The child processes of `pid` (a primary's workers), from /proc, as they are now. */
export function childProcesses(pid: number): number[] {
  return readdirSync('/proc')
    .filter((d) => /^[0-9]+$/.test(d))
    .filter((d) => {
      try {
        const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid;
      } catch {
        return false; // gone meanwhile
      }
    })
    .map(Number);
}

/** A keyferryd and its worker processes, as they are now. */
export const processTree = (pid: number): number[] => [pid, ...childProcesses(pid)];

/** CPU ms summed over processes. */
export const treeCpuMs = (pids: readonly number[]) => pids.reduce((sum, p) => sum + processCpuMs(p), 0);

/**
 * CPU ms of a process and its children (a PostgreSQL postmaster and its backends) from now
 * on: `stop()` answers what every process of the tree spent since, a process started meanwhile
 * counted whole. A child that exited meanwhile is missing, so the figure can only be low.
 */
export function treeCpuFromNow(pid: number): { stop(): number } {
  const cpuOf = (p: number): number | undefined => {
    try {
      return processCpuMs(p);
    } catch {
      return undefined; // gone meanwhile
    }
  };
  const before = new Map(processTree(pid).map((p) => [p, cpuOf(p) ?? 0]));
  return {
    // a child listed and then gone before its stat is read adds nothing (not minus its start)
    stop: () =>
      processTree(pid).reduce((sum, p) => {
        const now = cpuOf(p);
        return now === undefined ? sum : sum + now - (before.get(p) ?? 0);
      }, 0),
  };
}

/** Peak resident set (VmHWM) of a process in MB. */
export function peakRssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? Number.NaN);
  return kb / 1024;
}

/** This process's own CPU in ms (the load generator). */
export function ownCpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

/** Cores for the servers and for the load generator, or why there is no pinning. */
export type Pinning = { server: number; client: number } | { none: string };

export function choosePinning(): Pinning {
  if (!existsSync('/proc/self/stat')) return { none: 'no /proc (not Linux)' };
  if (spawnSync('taskset', ['-V']).status !== 0) return { none: 'taskset is missing (util-linux)' };
  if (availableParallelism() < 2) return { none: 'one core only' };
  return { server: 0, client: 1 };
}

/** Pins every thread of a process to one core (no-op without pinning). */
export function pin(pid: number, core: number | undefined): void {
  if (core === undefined) return;
  const res = spawnSync('taskset', ['-a', '-p', '-c', String(core), String(pid)], { encoding: 'utf8' });
  if (res.status !== 0) throw new Error(`taskset -a -p -c ${core} ${pid} failed: ${res.stderr}`);
}

export function describePinning(p: Pinning): string {
  return 'none' in p
    ? `not pinned (${p.none}): figures share the cores`
    : `servers pinned to core ${p.server}, load generator to core ${p.client} (taskset)`;
}

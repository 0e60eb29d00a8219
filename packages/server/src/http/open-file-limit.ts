import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';

/** Descriptors keyferryd needs beside its listeners' connections: database, pool, logs, key files. */
export const RESERVED_DESCRIPTORS = 128;

/** RLIMIT_NOFILE of this process, from /proc (Linux); undefined where there is no /proc. */
export function openFileLimit(limitsFile = '/proc/self/limits'): { soft: number; hard: number } | undefined {
  let text: string;
  try {
    text = readFileSync(limitsFile, 'utf8');
  } catch {
    return undefined;
  }
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
  if (!m) return undefined;
  const value = (v: string) => (v === 'unlimited' ? Number.POSITIVE_INFINITY : Number(v));
  return { soft: value(m[1]!), hard: value(m[2]!) };
}

/**
 * Says at start what the open-file limit is and whether every listener's connection cap fits
 * in it. Node cannot raise RLIMIT_NOFILE itself (no setrlimit): the operator does, with
 * `ulimit -n` or systemd's LimitNOFILE=, and this warning says by how much.
 */
export function reportOpenFileLimit(config: Config, log: Logger, limit = openFileLimit()): void {
  const caps = {
    api: config.api.limits.maxConnections,
    deviceLink: config.deviceLink.enabled ? config.deviceLink.limits.maxConnections : 0,
    gateway: config.gateway.enabled ? config.gateway.limits.maxConnections : 0,
  };
  const needed = caps.api + caps.deviceLink + caps.gateway + RESERVED_DESCRIPTORS;
  if (!limit) {
    log.info(
      { needed, caps },
      'open-file limit unknown (no /proc): make sure ulimit -n is at least the sum of the connection caps',
    );
    return;
  }
  const fields = { openFileLimit: limit, needed, caps };
  if (limit.soft >= needed) {
    log.info(
      fields,
      `open-file limit ${limit.soft} holds every listener's connection cap (${needed} needed)`,
    );
    return;
  }
  const target = Math.min(limit.hard, Math.max(needed, 65_536));
  log.warn(
    fields,
    `open-file limit ${limit.soft} is below the ${needed} descriptors the connection caps can take: a flood could exhaust it; ` +
      `start keyferryd with ulimit -n ${target} (hard limit ${limit.hard}), set LimitNOFILE=${target} in its systemd unit, ` +
      'or lower the maxConnections limits (docs/reliability.md)',
  );
}

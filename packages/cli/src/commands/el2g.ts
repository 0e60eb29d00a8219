import type { Command } from 'commander';

/**
 * `keyferry el2g …`: the EdgeLock 2GO-shaped commands fioctl users know. Each subcommand
 * lives in its own file and is registered here.
 */
export function registerEl2g(program: Command): Command {
  const el2g = program.command('el2g').description('EdgeLock 2GO-compatible provisioning: status, CAs, allow-list');
  return el2g;
}

import { BlockList, isIP } from 'node:net';

/** 127.0.0.0/8 and ::1, and 127.0.0.0/8 written as IPv4-mapped IPv6 (`::ffff:127.0.0.1`). */
const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');
LOOPBACK.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');

/**
 * `localhost`, 127.0.0.0/8 and ::1, however an address is written (`0:0:0:0:0:0:0:1`,
 * `::ffff:127.0.0.1`): addresses no other machine can reach. keyferryd serves plain HTTP only
 * there; the CLI warns before it sends a token over plain HTTP anywhere else.
 */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  const family = isIP(host);
  return family !== 0 && LOOPBACK.check(host, family === 4 ? 'ipv4' : 'ipv6');
}

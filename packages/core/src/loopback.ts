import { isIP } from 'node:net';

/**
 * `localhost`, 127.0.0.0/8 and ::1: addresses no other machine can reach. keyferryd serves
 * plain HTTP only there; the CLI warns before it sends a token over plain HTTP anywhere else.
 */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

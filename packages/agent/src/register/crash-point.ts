/** The points between auto-register's steps where a test can make the agent die (KEYFERRY_AGENT_CRASH_AT). */
export const REGISTER_CRASH_POINTS = ['after-keygen', 'after-enroll', 'after-store', 'after-report'] as const;
/** A rotation's points (keyferry-agent renew): auto-register's, and the sota.toml switch and the old pair's delete. */
export const CRASH_POINTS = [
  'after-keygen',
  'after-enroll',
  'after-store',
  'after-switch',
  'after-report',
  'after-delete',
] as const;
export type CrashPoint = (typeof CRASH_POINTS)[number];

/**
 * Test hook: when KEYFERRY_AGENT_CRASH_AT names this point, the process dies at once by
 * SIGKILL, as a power cut would end it — no cleanup, no report. The crash-convergence tests
 * use it to prove a rerun converges; nothing sets it in production.
 */
export function crashPoint(point: CrashPoint, env: NodeJS.ProcessEnv = process.env): void {
  if (env.KEYFERRY_AGENT_CRASH_AT === point) process.kill(process.pid, 'SIGKILL');
}

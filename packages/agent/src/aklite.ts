import { spawnSync } from 'node:child_process';
import { AgentError } from './agent-error.ts';

/**
 * Runs AKLITE_START_CMD (default `systemctl start aktualizr-lite`) through /bin/sh, as the
 * LmP script did, with its output going to the agent's own (the journal).
 */
export function startAktualizrLite(command: string): void {
  const run = spawnSync('/bin/sh', ['-c', command], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (run.error || run.status !== 0) {
    const why = run.error
      ? run.error.message
      : run.signal
        ? `killed by ${run.signal}`
        : `exit status ${run.status}`;
    throw new AgentError(
      'aklite_start',
      `AKLITE_START_CMD '${command}' failed (${why}); start aktualizr-lite by hand`,
    );
  }
}

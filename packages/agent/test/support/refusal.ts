import { AgentError } from '../../src/agent-error.ts';

/** The AgentError `fn` throws; anything else (or nothing) fails the test. */
export function refusal(fn: () => unknown): AgentError {
  try {
    fn();
  } catch (error) {
    if (error instanceof AgentError) return error;
    throw error;
  }
  throw new Error('expected a refusal');
}

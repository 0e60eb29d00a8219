import { DURATION_FORMAT, parseDuration } from '@keyferry/core';
import { CliError } from '../cli-error.ts';

/** A duration flag (`--expires 30d`) as the time that far from now. */
export function durationFromNow(flag: string, text: string, now = new Date()): Date {
  return new Date(now.getTime() + durationSeconds(flag, text) * 1000);
}

/** A duration flag (`--validity 2m`) in seconds. */
export function durationSeconds(flag: string, text: string): number {
  const seconds = parseDuration(text);
  if (seconds === undefined)
    throw new CliError(`${flag} ${JSON.stringify(text)} is not a duration: use ${DURATION_FORMAT}`, 2);
  return seconds;
}

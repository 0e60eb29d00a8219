/** Units of {@link parseDuration}: seconds, minutes, hours, days, weeks, 365-day years. */
const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800, y: 31_536_000 } as const;

/** Longest duration accepted anywhere (token lifetimes, validity windows): 100 years. */
export const MAX_DURATION_SECONDS = 100 * UNIT_SECONDS.y;

/**
 * Parses a duration such as `30d`, `12h`, `90m`, `2w` or `1y` into seconds. Returns
 * `undefined` for anything else (no unit, zero, negative, fractions, over 100 years), so the
 * caller can name its own flag in the message.
 */
export function parseDuration(text: string): number | undefined {
  const match = /^([1-9][0-9]{0,9})([smhdwy])$/.exec(text.trim());
  if (!match) return undefined;
  const seconds = Number(match[1]) * UNIT_SECONDS[match[2] as keyof typeof UNIT_SECONDS];
  return seconds <= MAX_DURATION_SECONDS ? seconds : undefined;
}

/** What {@link parseDuration} accepts, for error messages. */
export const DURATION_FORMAT =
  'a whole number above 0 and a unit: s, m, h, d, w or y (e.g. 30d, 12h, 1y), at most 100 years';

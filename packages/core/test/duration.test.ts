import { describe, expect, it } from 'vitest';
import { MAX_DURATION_SECONDS, parseDuration } from '../src/duration.ts';

describe('parseDuration', () => {
  it.each([
    ['30d', 30 * 86_400],
    ['12h', 12 * 3600],
    ['90m', 5400],
    ['45s', 45],
    ['2w', 14 * 86_400],
    ['1y', 365 * 86_400],
    [' 7d ', 7 * 86_400],
  ])('%s is %d seconds', (text, seconds) => {
    expect(parseDuration(text)).toBe(seconds);
  });

  it.each(['', '30', 'd', '0d', '-1d', '1.5d', '30 days', '30D', '101y', '1e3d'])('refuses %j', (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });

  it('accepts exactly the 100-year limit', () => {
    expect(parseDuration('100y')).toBe(MAX_DURATION_SECONDS);
  });
});

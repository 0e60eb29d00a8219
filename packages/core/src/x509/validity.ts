import { Time } from '@peculiar/asn1-x509';
import { usesUtcTime } from './der.ts';

/** How long a certificate is valid from its issuance. */
export type ValidityPeriod =
  | { readonly years: number }
  | { readonly days: number }
  | { readonly seconds: number };

/** A certificate's validity window. */
export interface Validity {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/**
 * notBefore is set this far before the issuance time: a device whose clock runs a little
 * behind the service must not see its fresh certificate as not yet valid (step-ca does the same).
 */
export const NOT_BEFORE_BACKDATE_MS = 60_000;

/**
 * The validity window for a certificate issued at `now` for `period`, to whole seconds
 * (certificates carry no fractions). Years are calendar years in UTC.
 */
export function validityFor(now: Date, period: ValidityPeriod): Validity {
  const start = wholeSeconds(now);
  if (!Number.isFinite(start.getTime())) throw new TypeError('issuance time is not a valid date');
  const notAfter = new Date(start.getTime());
  if ('years' in period) {
    if (!Number.isInteger(period.years) || period.years < 1)
      throw new TypeError('validity years must be a positive integer');
    notAfter.setUTCFullYear(notAfter.getUTCFullYear() + period.years);
  } else if ('seconds' in period) {
    if (!Number.isInteger(period.seconds) || period.seconds < 1)
      throw new TypeError('validity seconds must be a positive integer');
    notAfter.setTime(notAfter.getTime() + period.seconds * 1000);
  } else {
    if (!Number.isInteger(period.days) || period.days < 1)
      throw new TypeError('validity days must be a positive integer');
    notAfter.setTime(notAfter.getTime() + period.days * 86_400_000);
  }
  return { notBefore: new Date(start.getTime() - NOT_BEFORE_BACKDATE_MS), notAfter };
}

/** `date` with its milliseconds dropped. */
export function wholeSeconds(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000);
}

/** The ASN.1 Time for `date` to the second, UTCTime or GeneralizedTime by RFC 5280's rule. */
export function certificateTime(date: Date): Time {
  const whole = wholeSeconds(date);
  return new Time(usesUtcTime(whole) ? { utcTime: whole } : { generalTime: whole });
}

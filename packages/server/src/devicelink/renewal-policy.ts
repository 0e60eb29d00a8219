import type { ValidityPeriod } from '@keyferry/core';
import type { AssignedObject } from './device-records.ts';

/** A renewed certificate lives a year unless its object says otherwise (as FoundriesFactory's EST does). */
export const DEFAULT_RENEWAL_VALIDITY_DAYS = 365;
/** Devices renew from this many days before their certificate expires unless the object says otherwise. */
export const DEFAULT_RENEWAL_WINDOW_DAYS = 30;
/** Shortest certificate validity an object may set (and so its renewal window must be shorter). */
export const MIN_VALIDITY_SECONDS = 60;

const DAY_SECONDS = 86_400;

/**
 * How a CERTIFICATE object's certificates are renewed: validity of a renewed one, and when to
 * renew. The day fields are rounded up when the object sets seconds; the seconds are exact.
 */
export interface RenewalPolicy {
  validityDays: number;
  windowDays: number;
  validitySeconds: number;
  windowSeconds: number;
}

type RenewalColumns = Pick<AssignedObject, 'renewalValidityDays' | 'renewalWindowDays'> &
  Partial<Pick<AssignedObject, 'renewalValiditySeconds' | 'renewalWindowSeconds'>>;

export function renewalPolicy(object: RenewalColumns): RenewalPolicy {
  const validitySeconds =
    object.renewalValiditySeconds ??
    (object.renewalValidityDays ?? DEFAULT_RENEWAL_VALIDITY_DAYS) * DAY_SECONDS;
  const windowSeconds =
    object.renewalWindowSeconds ?? (object.renewalWindowDays ?? DEFAULT_RENEWAL_WINDOW_DAYS) * DAY_SECONDS;
  return {
    validityDays: Math.ceil(validitySeconds / DAY_SECONDS),
    windowDays: Math.ceil(windowSeconds / DAY_SECONDS),
    validitySeconds,
    windowSeconds,
  };
}

/** The validity of a first certificate of an object: seconds win over days; null = the default. */
export function firstValidity(
  object: Pick<AssignedObject, 'validityDays'> & Partial<Pick<AssignedObject, 'validitySeconds'>>,
): ValidityPeriod | null {
  if (object.validitySeconds != null) return { seconds: object.validitySeconds };
  return object.validityDays === null ? null : { days: object.validityDays };
}

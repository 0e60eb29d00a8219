import type { AssignedObject } from './device-records.ts';

/** A renewed certificate lives a year unless its object says otherwise (as FoundriesFactory's EST does). */
export const DEFAULT_RENEWAL_VALIDITY_DAYS = 365;
/** Devices renew from this many days before their certificate expires unless the object says otherwise. */
export const DEFAULT_RENEWAL_WINDOW_DAYS = 30;

/** How a CERTIFICATE object's certificates are renewed: validity of a renewed one, and when to renew. */
export interface RenewalPolicy {
  validityDays: number;
  windowDays: number;
}

export function renewalPolicy(
  object: Pick<AssignedObject, 'renewalValidityDays' | 'renewalWindowDays'>,
): RenewalPolicy {
  return {
    validityDays: object.renewalValidityDays ?? DEFAULT_RENEWAL_VALIDITY_DAYS,
    windowDays: object.renewalWindowDays ?? DEFAULT_RENEWAL_WINDOW_DAYS,
  };
}

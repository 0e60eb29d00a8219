import { KeyferryError } from '@keyferry/core';
import type { Factory } from '../factories/factories.ts';
import type { Db } from '../storage/database.ts';

/** The device-link host name of a factory: `<sub>.device-link.<domain>`. */
export function deviceLinkHostname(factory: Pick<Factory, 'subdomain'>, domain: string): string {
  return `${factory.subdomain}.device-link.${domain}`;
}

/** GET el2g/overview/: what `el2g status` heads with. */
export interface El2gOverview {
  /** The full device-link host name (what EL2GO_HOSTNAME must be set to). */
  subdomain: string;
  /**
   * The factory's 12NCs as JSON numbers, as fioctl decodes them (`[]int`); a 12NC (12 digits)
   * is far below 2^53, so the number is exact. Clients pad it back to 12 digits.
   */
  'product-ids': number[];
  plan: {
    kind: 'evaluation' | 'commercial';
    'enabled-at': string;
    'subscription-start': string;
    'evaluation-days': number;
    'max-devices': number;
    'max-keypairs': number;
    'max-certificates': number;
  };
}

export async function el2gOverview(db: Db, factory: Factory, domain: string): Promise<El2gOverview> {
  const products = await db
    .selectFrom('factory_products')
    .select('nc12')
    .where('factory_id', '=', factory.id)
    .orderBy('added_at')
    .orderBy('nc12')
    .execute();
  const plan = await db
    .selectFrom('factory_el2g')
    .selectAll()
    .where('factory_id', '=', factory.id)
    .executeTakeFirst();
  if (!plan) throw new KeyferryError('internal', `factory ${factory.name} has no EdgeLock 2GO plan row`);
  return {
    subdomain: deviceLinkHostname(factory, domain),
    'product-ids': products.map((p) => Number(p.nc12)),
    plan: {
      kind: plan.plan,
      'enabled-at': plan.enabled_at,
      'subscription-start': plan.subscription_start,
      'evaluation-days': plan.evaluation_days,
      'max-devices': plan.max_devices,
      'max-keypairs': plan.max_keypairs,
      'max-certificates': plan.max_certificates,
    },
  };
}

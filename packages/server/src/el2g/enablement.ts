import { KeyferryError } from '@keyferry/core';
import type { Config } from '../config/schema.ts';
import type { Factory } from '../factories/factories.ts';
import type { Db } from '../storage/database.ts';
import { deviceGroupName, productCatalogue } from './products.ts';

/** Gives a new factory its plan (from config) and its default products with their groups. */
export async function enableEl2g(
  db: Db,
  config: Pick<Config, 'el2g' | 'products'>,
  factory: Factory,
  now: Date,
): Promise<void> {
  const plan = config.el2g.plan;
  await db
    .insertInto('factory_el2g')
    .values({
      factory_id: factory.id,
      plan: plan.kind,
      enabled_at: now.toISOString(),
      subscription_start: now.toISOString(),
      max_devices: plan.maxDevicesPerYear,
      max_keypairs: plan.maxKeypairsPerDevice,
      max_certificates: plan.maxCertificatesPerDevice,
      evaluation_days: plan.evaluationDays,
    })
    .execute();
  for (const nc12 of config.el2g.defaultProducts) await addFactoryProduct(db, config, factory, nc12, now);
}

/**
 * Adds a catalogue product to a factory with its two device groups, and assigns the factory's
 * existing secure objects to them. Idempotent. Returns false when the factory already had it.
 */
export async function addFactoryProduct(
  db: Db,
  config: Pick<Config, 'products'>,
  factory: Factory,
  nc12: string,
  now: Date,
): Promise<boolean> {
  const catalogue = productCatalogue(config);
  if (!catalogue.has(nc12)) {
    throw new KeyferryError(
      'unknown_product',
      `unknown product id ${nc12}: known 12NCs are ${[...catalogue.keys()].join(', ')} (add others under products: in the config)`,
    );
  }
  const existing = await db
    .selectFrom('factory_products')
    .select('nc12')
    .where('factory_id', '=', factory.id)
    .where('nc12', '=', nc12)
    .executeTakeFirst();
  if (existing) return false;
  await db
    .insertInto('factory_products')
    .values({ factory_id: factory.id, nc12, added_at: now.toISOString() })
    .execute();
  const objects = await db
    .selectFrom('group_objects')
    .innerJoin('device_groups', 'device_groups.id', 'group_objects.group_id')
    .select('group_objects.secure_object_id')
    .distinct()
    .where('device_groups.factory_id', '=', factory.id)
    .execute();
  for (const production of [false, true]) {
    const group = await db
      .insertInto('device_groups')
      .values({
        factory_id: factory.id,
        nc12,
        name: deviceGroupName(nc12, production),
        production: production ? 1 : 0,
        created_at: now.toISOString(),
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    for (const o of objects) {
      await db
        .insertInto('group_objects')
        .values({ group_id: group.id, secure_object_id: o.secure_object_id, assigned_at: now.toISOString() })
        .execute();
    }
  }
  return true;
}

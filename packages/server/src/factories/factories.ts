import { randomInt } from 'node:crypto';
import { KeyferryError } from '@keyferry/core';
import type { Db } from '../storage/database.ts';
import type { FactoriesTable } from '../storage/tables.ts';

export interface Factory {
  id: number;
  name: string;
  repoId: string;
  subdomain: string;
  createdAt: string;
}

/** Factory names become DNS-safe path segments and certificate OUs. */
export const FACTORY_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789';
export const REPO_ID_LENGTH = 10;
export const SUBDOMAIN_LENGTH = 16;

/** Random lowercase alphanumerics, for repo ids and device-link subdomains. */
export function randomLabel(length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) out += ALNUM[randomInt(ALNUM.length)];
  return out;
}

export function toFactory(
  row: Pick<FactoriesTable, 'name' | 'repo_id' | 'subdomain' | 'created_at'> & { id: number },
): Factory {
  return {
    id: row.id,
    name: row.name,
    repoId: row.repo_id,
    subdomain: row.subdomain,
    createdAt: row.created_at,
  };
}

/** Inserts the factory row; the caller runs this inside the transaction that sets up the rest. */
export async function insertFactory(db: Db, name: string, now: Date): Promise<Factory> {
  if (!FACTORY_NAME.test(name)) {
    throw new KeyferryError(
      'invalid_request',
      `factory name ${JSON.stringify(name)} is not valid: use lowercase letters, digits and dashes (at most 63)`,
    );
  }
  const existing = await db.selectFrom('factories').select('id').where('name', '=', name).executeTakeFirst();
  if (existing) throw new KeyferryError('conflict', `factory ${name} already exists`);
  const row = await db
    .insertInto('factories')
    .values({
      name,
      repo_id: randomLabel(REPO_ID_LENGTH),
      subdomain: randomLabel(SUBDOMAIN_LENGTH),
      created_at: now.toISOString(),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return toFactory(row);
}

export async function findFactoryByName(db: Db, name: string): Promise<Factory | undefined> {
  const row = await db.selectFrom('factories').selectAll().where('name', '=', name).executeTakeFirst();
  return row ? toFactory(row) : undefined;
}

export async function findFactoryById(db: Db, id: number): Promise<Factory | undefined> {
  const row = await db.selectFrom('factories').selectAll().where('id', '=', id).executeTakeFirst();
  return row ? toFactory(row) : undefined;
}

export async function countFactories(db: Db): Promise<number> {
  const row = await db
    .selectFrom('factories')
    .select((eb) => eb.fn.countAll().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

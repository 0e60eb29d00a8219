import type { Kysely } from 'kysely';

/** API tokens can expire: `expires_at` (ISO time) or null for a token that never does. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('api_tokens').addColumn('expires_at', 'text').execute();
}

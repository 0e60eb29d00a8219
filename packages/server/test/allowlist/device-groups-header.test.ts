import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { groupsWithDevicesQuery } from '../../src/allowlist/device-listing.ts';
import { freshDatabase } from '../support/databases.ts';

/**
 * The first page of `el2g devices` carries x-device-groups. Its EXISTS per group once scanned
 * every device of the factory for a group without active devices (SQLite's plan: SCAN devices);
 * on the devices_group_active index it is a lookup whatever the allow-list's length.
 */
describe('the groups header query of the device listing', () => {
  let database: Awaited<ReturnType<typeof freshDatabase>>;
  beforeAll(async () => {
    database = await freshDatabase('sqlite');
  });
  afterAll(async () => {
    await database.dispose();
  });

  it('looks devices up by group on an index (SQLite query plan), not by scanning them', async () => {
    const compiled = groupsWithDevicesQuery(database.db, 1).compile();
    const plan = await database.db.executeQuery<{ detail: string }>({
      ...compiled,
      sql: `EXPLAIN QUERY PLAN ${compiled.sql}`,
    });
    const devices = plan.rows.map((r) => r.detail).filter((d) => /\bdevices\b/.test(d));
    expect(devices).toEqual([
      expect.stringMatching(/^SEARCH devices .*USING (COVERING )?INDEX devices_group_active/),
    ]);
  });
});

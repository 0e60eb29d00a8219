import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { factoryForHost } from '../../src/devicelink/factory-host.ts';
import { insertFactory } from '../../src/factories/factories.ts';
import { statementsSent } from '../../src/storage/statement-count.ts';
import { BACKENDS, freshDatabase } from '../support/databases.ts';

/**
 * The factory a device-link connection names by SNI. Factory rows are never updated or
 * deleted, so a factory once found is kept per database and a device's connection reads no
 * factory row; a host name no factory has is looked up each time.
 */
describe.each(BACKENDS)('the factory of a device-link host name on %s', (backend) => {
  let database: Awaited<ReturnType<typeof freshDatabase>>;
  const domain = 'example.test';
  beforeAll(async () => {
    database = await freshDatabase(backend);
  });
  afterAll(async () => {
    await database?.dispose();
  });
  const lookup = async (sub: string) => {
    const sent = statementsSent();
    const factory = await factoryForHost(database.db, `${sub}.device-link.${domain}`, domain).catch(
      (e: Error) => e,
    );
    return { factory, statements: statementsSent() - sent };
  };

  it('reads a factory once, then answers from what it found', async () => {
    const made = await insertFactory(database.db, 'line-one', new Date());
    expect(await lookup(made.subdomain)).toEqual({ factory: made, statements: 1 });
    expect(await lookup(made.subdomain)).toEqual({ factory: made, statements: 0 });
    // another database keeps its own answers
    const other = await freshDatabase(backend);
    try {
      const sent = statementsSent();
      await expect(
        factoryForHost(other.db, `${made.subdomain}.device-link.${domain}`, domain),
      ).rejects.toThrow(/no factory has the device-link host name/);
      expect(statementsSent() - sent).toBe(1);
    } finally {
      await other.dispose();
    }
  });

  it('looks up an unknown host name each time, and finds its factory once it exists', async () => {
    const refused = await lookup('nosuchfactory');
    expect(refused.statements).toBe(1);
    expect(String(refused.factory)).toMatch(
      /no factory has the device-link host name nosuchfactory\.device-link\.example\.test; check EL2GO_HOSTNAME/,
    );
    expect((await lookup('nosuchfactory')).statements).toBe(1);
    const made = await insertFactory(database.db, 'line-two', new Date());
    expect(await lookup(made.subdomain)).toEqual({ factory: made, statements: 1 });
  });
});

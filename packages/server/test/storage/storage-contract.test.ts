import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listAudit, recordAudit, recordCountedAudit } from '../../src/audit/audit-log.ts';
import { countFactories, findFactoryByName, insertFactory } from '../../src/factories/factories.ts';
import { migrate } from '../../src/storage/migrate.ts';
import { authenticateToken, createApiToken } from '../../src/tokens/api-tokens.ts';
import { BACKENDS, freshDatabase } from '../support/databases.ts';

/** One contract, two backends: whatever passes on SQLite must pass on PostgreSQL. */
describe.each(BACKENDS)('storage contract on %s', (backend) => {
  let database: Awaited<ReturnType<typeof freshDatabase>>;
  beforeAll(async () => {
    database = await freshDatabase(backend);
  });
  afterAll(async () => {
    await database.dispose();
  });

  it('runs migrations once: a second run applies nothing and keeps the data', async () => {
    const f = await insertFactory(database.db, 'contract-mig', new Date());
    expect(await migrate(database.db as never, backend)).toEqual([]);
    expect((await findFactoryByName(database.db, 'contract-mig'))?.id).toBe(f.id);
  });

  it('gives factories unique names, repo ids and 16-character subdomains', async () => {
    const a = await insertFactory(database.db, 'contract-a', new Date());
    const b = await insertFactory(database.db, 'contract-b', new Date());
    expect(a.id).not.toBe(b.id);
    expect(a.repoId).not.toBe(b.repoId);
    expect(a.subdomain).toMatch(/^[a-z0-9]{16}$/);
    await expect(insertFactory(database.db, 'contract-a', new Date())).rejects.toMatchObject({
      code: 'conflict',
    });
    await expect(insertFactory(database.db, 'Bad Name', new Date())).rejects.toMatchObject({
      code: 'invalid_request',
    });
  });

  it('rolls back a failed transaction completely', async () => {
    const before = await countFactories(database.db);
    await expect(
      database.db.transaction().execute(async (trx) => {
        await insertFactory(trx, 'contract-rollback', new Date());
        throw new Error('boom after insert');
      }),
    ).rejects.toThrow('boom after insert');
    expect(await countFactories(database.db)).toBe(before);
    expect(await findFactoryByName(database.db, 'contract-rollback')).toBeUndefined();
  });

  it('stores tokens hashed and authenticates only the exact token', async () => {
    const f = await insertFactory(database.db, 'contract-tok', new Date());
    const { id, token } = await createApiToken(database.db, {
      factoryId: f.id,
      scopes: ['read'],
      description: 't',
    });
    const row = await database.db
      .selectFrom('api_tokens')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirstOrThrow();
    expect(row.secret_hash).not.toContain(token.slice(-43));
    expect(row.secret_hash).toMatch(/^[0-9a-f]{64}$/);
    const principal = await authenticateToken(database.db, token);
    expect(principal.factoryId).toBe(f.id);
    expect([...principal.scopes]).toEqual(['read']);
    const tampered = token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A');
    await expect(authenticateToken(database.db, tampered)).rejects.toMatchObject({ code: 'unauthenticated' });
    await expect(authenticateToken(database.db, undefined)).rejects.toMatchObject({
      code: 'unauthenticated',
    });
    await database.db
      .updateTable('api_tokens')
      .set({ revoked_at: new Date().toISOString() })
      .where('id', '=', id)
      .execute();
    await expect(authenticateToken(database.db, token)).rejects.toMatchObject({ code: 'unauthenticated' });
  });

  it('pages the audit log newest first without gaps or repeats', async () => {
    const f = await insertFactory(database.db, 'contract-audit', new Date());
    for (let i = 0; i < 7; i++) {
      await recordAudit(database.db, {
        factoryId: f.id,
        actor: 'system',
        action: 'test.step',
        object: `o${i}`,
        detail: { i },
        correlationId: `c${i}`,
      });
    }
    const first = await listAudit(database.db, f.id, { limit: 3 });
    const second = await listAudit(database.db, f.id, { limit: 3, before: first[2]!.id });
    const third = await listAudit(database.db, f.id, { limit: 3, before: second[2]!.id });
    const objects = [...first, ...second, ...third].map((e) => e.object);
    expect(objects).toEqual(['o6', 'o5', 'o4', 'o3', 'o2', 'o1', 'o0']);
    expect(first[0]!.detail).toEqual({ i: 6 });
    expect(
      (await listAudit(database.db, f.id, { limit: 10, correlationId: 'c3' })).map((e) => e.object),
    ).toEqual(['o3']);
  });

  it('counts repeated entries: one row per key and minute, keeping the first detail', async () => {
    const f = await insertFactory(database.db, 'contract-counted', new Date());
    const entry = (i: number) => ({
      factoryId: f.id,
      actor: 'device:1',
      action: 'test.refused',
      object: 'path:/x',
      detail: { i },
      correlationId: `k${i}`,
    });
    const minute = new Date('2026-01-01T10:00:05Z');
    // concurrent upserts of one key must neither fail on the unique key nor lose a count
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        recordCountedAudit(database.db, entry(i), 'a', new Date(minute.getTime() + i * 1000)),
      ),
    );
    await recordCountedAudit(database.db, entry(100), 'b', minute);
    await recordCountedAudit(database.db, entry(200), 'a', new Date('2026-01-01T10:01:00Z'));
    const rows = await listAudit(database.db, f.id, { limit: 10 });
    expect(rows.map((r) => r.count).sort((x, y) => x - y)).toEqual([1, 1, 20]);
    const counted = rows.find((r) => r.count === 20)!;
    expect(counted.detail).toEqual({ i: Number(counted.correlationId.slice(1)) });
    expect(rows.find((r) => r.correlationId === 'k200')!.at).toBe('2026-01-01T10:01:00.000Z');
  });

  it('reports its dialect and answers a trivial query', async () => {
    expect(database.dialect).toBe(backend);
    const res = await sql<{ x: number }>`select 1 as x`.execute(database.db);
    expect(Number(res.rows[0]!.x)).toBe(1);
  });
});

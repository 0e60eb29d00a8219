import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS } from '../support/databases.ts';
import { startTestService, type TestService } from '../support/service.ts';

const F = '/ota/factories/demo';
const SE050 = '935389312472';
const AT_ONCE = 4;

/**
 * The same management change sent several times at once (a retrying client, two operators) is
 * made once and answered as a repeat, on both backends: on PostgreSQL each of these once gave a
 * 500 (a unique violation) or made its change twice.
 */
describe.each(BACKENDS)('the same management change sent several times at once (%s)', (backend) => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService(backend);
  });
  afterAll(async () => {
    await svc?.stop();
  });

  const atOnce = (method: string, path: string, body?: unknown) =>
    Promise.all(
      Array.from({ length: AT_ONCE }, () => svc.call(method, path, body === undefined ? {} : { body })),
    );
  const db = () => svc.service.ctx.database.db;

  it('a secure object and its group assignment: made once, every answer a success', async () => {
    const made = await atOnce('POST', `${F}/el2g-proxy/secure-objects`, {
      name: 'kp-race',
      type: 'KEYPAIR',
      objectId: '83000070',
    });
    expect(made.map((r) => r.status).sort()).toEqual([200, 200, 200, 201]);
    expect(new Set(made.map((r) => r.json.id)).size).toBe(1);
    const groups = (await svc.call('GET', `${F}/el2g-proxy/device-groups`)).json.content;
    const group = groups[0].id;
    const assigned = await atOnce(
      'POST',
      `${F}/el2g-proxy/secure-objects/${made[0]!.json.id}/device-groups`,
      {
        deviceGroupIds: [group],
      },
    );
    expect(assigned.map((r) => r.status)).toEqual(assigned.map(() => 200));
    const creates = await db()
      .selectFrom('audit_log')
      .select('id')
      .where('action', '=', 'secure-object.create')
      .where('object', '=', 'secure-object:kp-race')
      .execute();
    expect(creates).toHaveLength(1);
  });

  it('an online CA CSR: one key, the same CSR answered to each', async () => {
    const asked = await atOnce('POST', `${F}/certs/`, { 'first-time-init': true, 'ca-csr': true });
    expect(asked.map((r) => r.status)).toEqual(asked.map(() => 201));
    expect(new Set(asked.map((r) => r.json['ca-csr'])).size).toBe(1);
    const open = await db().selectFrom('online_cas').select('id').where('certificate', 'is', null).execute();
    expect(open).toHaveLength(1);
  });

  it('deleting one device: deleted once, not-present after, one audit entry', async () => {
    const id = `0x${'04'.padEnd(36, '7')}`;
    const added = await svc.call('POST', `${F}/el2g/devices/`, {
      body: { 'product-id': SE050, devices: [id] },
    });
    expect(added.status, JSON.stringify(added.json)).toBe(200);
    const deleted = await atOnce('DELETE', `${F}/el2g/devices/`, { 'product-id': SE050, devices: [id] });
    expect(deleted.map((r) => r.status)).toEqual(deleted.map(() => 200));
    expect(deleted.map((r) => r.json.counts.deleted).sort()).toEqual([0, 0, 0, 1]);
    const audits = await db()
      .selectFrom('audit_log')
      .select('id')
      .where('action', '=', 'device.delete')
      .execute();
    expect(audits).toHaveLength(1);
  });

  it('revoking one token: every answer names the one stored revocation', async () => {
    const made = await svc.call('POST', `${F}/tokens/`, {
      body: { description: 'doomed', scopes: ['read'] },
    });
    expect(made.status).toBe(201);
    const revoked = await atOnce('DELETE', `${F}/tokens/${made.json.id}`);
    expect(revoked.map((r) => r.status)).toEqual(revoked.map(() => 200));
    const stored = await db()
      .selectFrom('api_tokens')
      .select('revoked_at')
      .where('id', '=', made.json.id)
      .executeTakeFirstOrThrow();
    expect(revoked.map((r) => r.json['revoked-at'])).toEqual(revoked.map(() => stored.revoked_at));
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS } from '../support/databases.ts';
import { startTestService, type TestService } from '../support/service.ts';

const F = '/ota/factories/demo';
const HUGE = 9_999_999_999;
const MAX = 2_147_483_647;

/**
 * Ids and cursors are 32-bit integers in PostgreSQL: one past that range is refused, naming the
 * bound, on both backends alike (it was a 500 on PostgreSQL), and the largest one is answered.
 */
describe.each(BACKENDS)('ids and cursors beyond a 32-bit row id (%s)', (backend) => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService(backend);
  });
  afterAll(async () => {
    await svc?.stop();
  });

  const requests = (n: number): Array<[string, string, unknown?]> => [
    ['GET', `${F}/el2g/devices/?after=${n}`],
    ['GET', `${F}/devices/?after=${n}`],
    ['GET', `${F}/audit/?before=${n}`],
    ['GET', `${F}/el2g-proxy/secure-objects/${n}`],
    ['GET', `${F}/el2g-proxy/intermediate-cas/${n}`],
    ['GET', `${F}/el2g-proxy/device-groups/${n}`],
    [
      'POST',
      `${F}/el2g-proxy/secure-objects`,
      { name: 'too-far', type: 'CERTIFICATE', objectId: '83000071', caId: n },
    ],
    ['POST', `${F}/el2g-proxy/secure-objects/${n}/device-groups`, { deviceGroupIds: [n] }],
    ['PUT', `${F}/el2g/device-gateway/`, { id: n, 'root-ca': 'x', 'signed-cert': 'x' }],
  ];

  it('refuses one past the range as invalid_request naming the bound, and changes nothing', async () => {
    const audit = await svc.service.ctx.database.db.selectFrom('audit_log').select('id').execute();
    for (const [method, path, body] of requests(HUGE)) {
      const res = await svc.call(method, path, body === undefined ? {} : { body });
      expect([res.status, res.json.code], `${method} ${path}`).toEqual([400, 'invalid_request']);
      expect(res.json.detail, path).toContain(String(MAX));
    }
    expect(await svc.service.ctx.database.db.selectFrom('audit_log').select('id').execute()).toEqual(audit);
  });

  it('answers the largest id as any other: an empty page, or not found', async () => {
    for (const [method, path, body] of requests(MAX)) {
      const res = await svc.call(method, path, body === undefined ? {} : { body });
      expect(res.status, `${method} ${path}: ${JSON.stringify(res.json)}`).toBeLessThan(500);
    }
  });

  it('reads ids, cursors and page sizes in decimal digits only (0x10 was read as 16, 1e1 as 10, an empty one as 0)', async () => {
    const paths = (v: string) => [
      `${F}/el2g/devices/?after=${v}`,
      `${F}/el2g/devices/?limit=${v}`,
      `${F}/el2g/devices/?page=${v}`,
      `${F}/devices/?after=${v}`,
      `${F}/devices/?limit=${v}`,
      `${F}/audit/?before=${v}`,
      `${F}/audit/?limit=${v}`,
      `${F}/el2g-proxy/secure-objects/${v}`,
    ];
    for (const v of ['0x10', '1e1', '%2016', '16.0', '']) {
      for (const path of paths(v)) {
        if (v === '' && path.endsWith('/')) continue; // no id at all: another route
        const res = await svc.call('GET', path);
        expect([res.status, res.json.code], path).toEqual([400, 'invalid_request']);
        expect(res.json.detail, path).toContain(
          'is not a decimal whole number: write it in the digits 0-9 only',
        );
      }
    }
    // the same values in digits are answered
    for (const path of paths('16')) expect((await svc.call('GET', path)).status, path).toBeLessThan(500);
  });
});

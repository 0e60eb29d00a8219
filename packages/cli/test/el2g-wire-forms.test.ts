import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBinAsync } from '../../../test/support/processes.ts';

const HEX = '0x04005001eee3ba1ee96e60047e57da0f6880';
const DEC = '348555492004256518532939906410866457667712';
const PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

const PLAN = {
  kind: 'commercial',
  enabledAt: '2026-01-01T00:00:00.000Z',
  evaluationEndsAt: null,
  evaluationDays: 30,
  evaluationExpired: false,
  subscriptionYear: { start: '2026-01-01T00:00:00.000Z', end: '2027-01-01T00:00:00.000Z' },
  devices: { used: 1, max: 50000 },
  maxKeypairsPerDevice: 2,
  maxCertificatesPerDevice: 2,
};

/**
 * The management API as fioctl v0.42's Go types decode it (12NCs and ids as JSON numbers, a
 * batch in which nothing changed answered 4xx with the per-device results), so the CLI is shown
 * to read both that and keyferryd's string forms. Each route: status, body (text is sent as is).
 */
const ROUTES: Record<string, [number, unknown]> = {
  'GET el2g-proxy/products': [200, [{ nc12: 935389312472, commercialName: 'SE050C2HQ1/Z01V3' }]],
  'GET el2g/overview/': [200, { subdomain: 'sub.device-link.localhost', 'product-ids': [935389312472] }],
  'GET el2g/secure-objects/': [200, []],
  'GET el2g/intermediate-cas/': [200, [{ id: 1, name: 'ca', algorithm: 'NIST_P256', value: PEM }]],
  'GET el2g/plan/': [200, PLAN],
  'GET el2g-proxy/secure-objects': [200, { content: [] }],
  'GET el2g/devices/': [
    200,
    `[{"device-group":"fio-935389312472","id":"${DEC}","last-connection":null},` +
      '{"device-group":"fio-935389312472","id":12345,"last-connection":null}]',
  ],
  'POST el2g/devices/': [
    409,
    {
      code: 'device_in_other_group',
      detail: 'no device was added',
      results: [{ id: HEX, status: 'in-other-group', group: 'fio-935389312472-production' }],
    },
  ],
};

function fioctlShapedApi(req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '').replace(/^\/ota\/factories\/demo\//, '').split('?')[0];
  const [status, body] = ROUTES[`${req.method} ${path}`] ?? [
    404,
    { code: 'not_found', detail: `no ${path}` },
  ];
  res.writeHead(status, { 'content-type': status >= 400 ? 'application/problem+json' : 'application/json' });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

describe('el2g commands read numbers or strings where fioctl took either', () => {
  let server: Server;
  let home: string;
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    home = mkdtempSync(join(tmpdir(), 'keyferry-wire-'));
    server = createServer(fioctlShapedApi);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    env = {
      HOME: home,
      XDG_CONFIG_HOME: join(home, 'xdg'),
      KEYFERRY_SERVER: `http://127.0.0.1:${port}`,
      KEYFERRY_TOKEN: 'kf_test',
      KEYFERRY_FACTORY: 'demo',
    };
  });
  afterAll(() => {
    server?.close();
    rmSync(home, { recursive: true, force: true });
  });

  it('el2g status names a product whose 12NC came as a JSON number', { timeout: 60_000 }, async () => {
    const res = await runBinAsync('keyferry', ['el2g', 'status'], { env });
    expect(res.stdout).toContain(
      '# Product IDs\n\tID            NAME\n\t--            ----\n\t935389312472  SE050C2HQ1/Z01V3\n',
    );
  });

  it('el2g devices lists ids given as strings or numbers', { timeout: 60_000 }, async () => {
    const res = await runBinAsync('keyferry', ['el2g', 'devices'], { env });
    expect(res.stderr).toBe('');
    expect(res.stdout).toBe(
      `GROUP             ID\n-----             --\nfio-935389312472  ${DEC}\nfio-935389312472  12345\n`,
    );
  });

  it('a batch refused as a whole (4xx with per-device results) says why for the device', {
    timeout: 60_000,
  }, async () => {
    const res = await runBinAsync('keyferry', ['el2g', 'devices', 'add', '935389312472', HEX], { env });
    expect(res).toEqual({
      status: 1,
      stdout: '',
      stderr: `ERROR: ${HEX}: in another group (fio-935389312472-production); remove it there first\n`,
    });
  });
});

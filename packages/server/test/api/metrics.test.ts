import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type DeviceLinkFixture,
  provisionOverDeviceLink,
  startDeviceLinkFixture,
} from '../devicelink/fixture.ts';
import { BACKENDS } from '../support/databases.ts';

/** `name{labels} value` lines of the Prometheus text, as a map. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

describe.each(BACKENDS)('GET /metrics on %s after a provisioning run', (backend) => {
  let f: DeviceLinkFixture;
  beforeAll(async () => {
    f = await startDeviceLinkFixture(backend);
  });
  afterAll(async () => {
    await f?.svc.stop();
  });

  it('has every documented metric with the run in it', async () => {
    const device = await f.device();
    await provisionOverDeviceLink(f.call, device);
    const stranger = await f.device({ allowList: false });
    expect((await f.call(stranger, { path: '/device-link/v1/manifest' })).json.code).toBe(
      'device_not_allowlisted',
    );
    expect(
      (await f.svc.call('GET', '/ota/factories/demo/el2g/overview/', { headers: { 'osf-token': 'nope' } }))
        .status,
    ).toBe(401);

    const res = await fetch(`${f.svc.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    for (const name of [
      'keyferry_http_requests_total',
      'keyferry_http_request_duration_seconds',
      'keyferry_enrollments_total',
      'keyferry_refusals_total',
      'keyferry_device_objects',
      'keyferry_allowlist_devices',
      'keyferry_plan_devices_used',
      'keyferry_plan_devices_max',
      'keyferry_crl_age_seconds',
      'keyferry_db_pool_connections',
      'keyferry_db_statements_total',
    ]) {
      expect(text, name).toContain(`# TYPE ${name} `);
    }
    const s = samples(text);
    expect(s.get('keyferry_enrollments_total{object="fio-device-gateway-ca"}')).toBe(1);
    expect(s.get('keyferry_device_objects{factory="demo",state="PROVISIONING_COMPLETED"}')).toBe(2);
    expect(s.get('keyferry_allowlist_devices{factory="demo"}')).toBe(1);
    expect(s.get('keyferry_plan_devices_used{factory="demo"}')).toBe(1);
    expect(s.get('keyferry_plan_devices_max{factory="demo"}')).toBe(50_000);
    expect(s.get('keyferry_refusals_total{listener="device-link",code="device_not_allowlisted"}')).toBe(1);
    expect(s.get('keyferry_refusals_total{listener="api",code="unauthenticated"}')).toBe(1);
    expect(
      s.get(
        'keyferry_http_requests_total{listener="device-link",route="/.well-known/est/{label}/simpleenroll",method="POST",status="200"}',
      ),
    ).toBe(1);
    expect(
      s.get(
        'keyferry_http_requests_total{listener="api",route="/ota/factories/:factory/el2g/overview/",method="GET",status="401"}',
      ),
    ).toBe(1);
    expect(
      s.get(
        'keyferry_http_request_duration_seconds_count{listener="device-link",route="/device-link/v1/manifest"}',
      ),
    ).toBe(2);
    expect(s.get('keyferry_db_pool_connections{state="total"}')).toBeGreaterThanOrEqual(1);
    // one device provisioned makes a few dozen statements; scraping again adds the scrape's own
    const statements = s.get('keyferry_db_statements_total')!;
    expect(statements).toBeGreaterThan(26);
    await f.call(device, { path: '/device-link/v1/manifest' });
    const again = samples(await (await fetch(`${f.svc.url}/metrics`)).text());
    expect(again.get('keyferry_db_statements_total')! - statements).toBeGreaterThanOrEqual(5);
    // raw URLs never become labels: one series per route template
    expect(text).not.toContain(device.uid.decimal);
  });
});

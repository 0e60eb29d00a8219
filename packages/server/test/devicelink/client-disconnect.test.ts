import { connect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DeviceLinkFixture, startDeviceLinkFixture } from './fixture.ts';

let f: DeviceLinkFixture;
beforeAll(async () => {
  f = await startDeviceLinkFixture();
});
afterAll(async () => f?.svc.stop());

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Issue 12 §1: a device that hung up mid-enroll was logged at error level with a stack trace
 * and audited as `internal`, and its object marked failed: any client could fill the log and
 * the audit table. A client going away is nothing the service did wrong.
 */
describe('device-link: a client that hangs up mid-request', () => {
  it('is not audited and leaves its object as it was', async () => {
    const device = await f.device();
    const auditBefore = await f.count('audit_log');
    const statesBefore = await f.states(device);
    const socket = connect({
      host: '127.0.0.1',
      port: Number(f.address.slice(f.address.lastIndexOf(':') + 1)),
      ca: f.serviceCa,
      servername: `${f.subdomain}.device-link.localhost`,
      key: device.key,
      cert: device.cert,
    });
    socket.on('error', () => {});
    await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
    socket.write(
      'POST /.well-known/est/fio-device-gateway-ca/simpleenroll HTTP/1.1\r\nHost: x\r\n' +
        'Content-Type: application/pkcs10\r\nContent-Length: 4000\r\n\r\nMIIB',
    );
    // the service authenticates the device and starts reading the body, then the device is gone
    await settle(300);
    socket.destroy();
    await settle(700);
    expect(await f.count('audit_log')).toBe(auditBefore);
    expect(await f.states(device)).toEqual(statesBefore);
    // and the device-link serves the next call as before
    const next = await f.call(device, { path: '/device-link/v1/manifest' });
    expect(next.status).toBe(200);
  });
});

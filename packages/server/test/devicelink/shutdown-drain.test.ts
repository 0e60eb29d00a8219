import { once } from 'node:events';
import { connect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawTls } from '../../../../test/support/raw-tls.ts';
import { type DeviceLinkFixture, freshCsr, startDeviceLinkFixture, type TestDevice } from './fixture.ts';

/** A device's own TLS connection, read as raw HTTP/1.1, so the test decides when each byte goes. */
function rawLink(f: DeviceLinkFixture, device: TestDevice) {
  return rawTls({
    address: f.address,
    ca: f.serviceCa,
    servername: `${f.subdomain}.device-link.localhost`,
    key: device.key,
    cert: device.cert,
  });
}

const manifest = 'GET /device-link/v1/manifest HTTP/1.1\r\nhost: device-link\r\n\r\n';

describe('device-link on shutdown', () => {
  let f: DeviceLinkFixture;
  let stopped = false;

  beforeAll(async () => {
    f = await startDeviceLinkFixture('sqlite');
  });
  afterAll(async () => {
    if (!stopped) await f?.svc.stop();
  });

  it('answers the enrollment in flight, closes idle connections at once and takes no new one', async () => {
    const enrolling = await rawLink(f, await f.device());
    const idle = await rawLink(f, await f.device());
    for (const link of [enrolling, idle]) {
      link.socket.write(manifest);
      const answer = await link.answer();
      expect(answer.status, answer.body).toBe(200);
    }
    // the enrollment's head is in: 100 Continue says the server has parsed it and waits for the CSR
    const csr = (await freshCsr()).base64;
    const from = enrolling.length;
    enrolling.socket.write(
      'POST /.well-known/est/fio-device-gateway-ca/simpleenroll HTTP/1.1\r\nhost: device-link\r\n' +
        'content-type: application/pkcs10\r\ncontent-transfer-encoding: base64\r\n' +
        `expect: 100-continue\r\ncontent-length: ${csr.length}\r\n\r\n`,
    );
    await enrolling.until(/^HTTP\/1\.1 100 Continue\r\n\r\n/, from);

    const stopping = f.svc.stop();
    stopped = true;
    // the idle keep-alive connection ends without waiting for the one in flight
    await idle.closed;
    // and no new device gets in
    const [host, port] = f.address.split(':');
    const refused = connect({ host, port: Number(port), rejectUnauthorized: false });
    const [error] = await once(refused, 'error');
    expect((error as NodeJS.ErrnoException).code).toBe('ECONNREFUSED');

    enrolling.socket.write(csr);
    // the answer after the 100 Continue
    const answer = await enrolling.answer(from);
    expect(answer.status, answer.body).toBe(200);
    expect(answer.head).toMatch(/\r\nconnection: close\r\n/i);
    expect(answer.head).toMatch(/\r\ncontent-type: application\/pkcs7-mime/i);
    expect(answer.body.length).toBeGreaterThan(100);
    await enrolling.closed;
    await stopping;
  });
});

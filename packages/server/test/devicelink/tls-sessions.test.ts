import { connect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DeviceLinkFixture, startDeviceLinkFixture } from './fixture.ts';

let f: DeviceLinkFixture;
beforeAll(async () => {
  f = await startDeviceLinkFixture();
});
afterAll(async () => {
  await f?.svc.stop();
});

/**
 * One TLS connection to the device-link as a device makes it; resolves with the session
 * ticket the server left the client, once the server has answered one request.
 */
async function ticketAfterOneRequest(maxVersion: 'TLSv1.2' | 'TLSv1.3') {
  const device = await f.device();
  const [host, port] = [
    f.address.slice(0, f.address.lastIndexOf(':')),
    f.address.slice(f.address.lastIndexOf(':') + 1),
  ];
  return new Promise<{ ticket: Buffer | undefined; answer: string }>((resolve, reject) => {
    const socket: TLSSocket = connect(
      {
        host,
        port: Number(port),
        ca: f.serviceCa,
        key: device.key,
        cert: device.cert,
        servername: `${f.subdomain}.device-link.localhost`,
        maxVersion,
      },
      () => socket.write(`GET /device-link/v1/manifest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    );
    let answer = '';
    socket.on('data', (d: Buffer) => (answer += d.toString()));
    socket.on('error', reject);
    socket.on('end', () => {
      resolve({ ticket: socket.getTLSTicket(), answer });
      socket.end();
    });
  });
}

describe('device-link TLS sessions (a device makes one connection per run)', () => {
  it('mints no encrypted session ticket on TLS 1.3, only a short server-side session id', async () => {
    const { ticket, answer } = await ticketAfterOneRequest('TLSv1.3');
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    // an encrypted (stateless) ticket carries the whole session, ~600 bytes; a session id is 32
    expect(ticket?.length ?? 0).toBeLessThanOrEqual(32);
  });

  it('sends no session ticket on TLS 1.2', async () => {
    const { ticket, answer } = await ticketAfterOneRequest('TLSv1.2');
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    expect(ticket).toBeUndefined();
  });
});

import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DeviceLinkFixture, freshCsr, startDeviceLinkFixture } from './fixture.ts';

const EST = '/.well-known/est/fio-device-gateway-ca';
const CSR_HEADERS = { 'content-type': 'application/pkcs10', 'content-transfer-encoding': 'base64' };
/** Narrow limits so the flood stays small; the defaults are in docs/configuration.md. */
const LIMITS = { handshakeTimeoutMs: 500, maxConnectionsPerAddress: 10 };
const FLOOD = 30;

let f: DeviceLinkFixture;
beforeAll(async () => {
  f = await startDeviceLinkFixture('sqlite', {
    deviceLink: { listen: '127.0.0.1:0', limits: LIMITS },
    gateway: { listen: '127.0.0.1:0', limits: LIMITS },
  });
});
afterAll(async () => f?.svc.stop());

const portOf = (address: string) => Number(address.slice(address.lastIndexOf(':') + 1));

interface Idle {
  socket: Socket;
  /** Milliseconds from connect to close. */
  closed: Promise<number>;
}

/** TCP connections that never start TLS, from 127.0.0.2 (loopback too, but not the devices' address). */
async function idleFlood(port: number): Promise<Idle[]> {
  const idle = Array.from({ length: FLOOD }, () => {
    const socket = connect({ host: '127.0.0.1', port, localAddress: '127.0.0.2' });
    socket.on('error', () => {});
    const opened = new Promise<number>((r) => socket.once('connect', () => r(Date.now())));
    const closed = new Promise<number>((r) =>
      socket.once('close', () => opened.then((t) => r(Date.now() - t))),
    );
    return { socket, closed };
  });
  return idle;
}

/** Resolves when `n` of the sockets have closed, with those still open. */
async function whenClosed(idle: Idle[], n: number): Promise<Idle[]> {
  const done = new Set<Idle>();
  await new Promise<void>((resolve) => {
    for (const i of idle)
      i.closed.then(() => {
        done.add(i);
        if (done.size === n) resolve();
      });
  });
  return idle.filter((i) => !done.has(i));
}

/**
 * Issue 12 §1: idle TCP connections that never start TLS held every device-link slot (the cap
 * was 2,048 for all clients together), locking devices out. Now one address holds at most
 * maxConnectionsPerAddress, and an idle connection is closed at handshakeTimeoutMs.
 */
describe('TLS listeners under a flood of idle TCP connections', () => {
  it('device-link: past the per-address cap they are closed at once, a device still enrolls, the rest time out', async () => {
    const idle = await idleFlood(portOf(f.address));
    // the ones past the cap close at once; which ones is the kernel's order
    const open = await whenClosed(idle, FLOOD - LIMITS.maxConnectionsPerAddress);
    expect(open.length).toBe(LIMITS.maxConnectionsPerAddress);
    const device = await f.device();
    const enrolled = await f.call(device, {
      method: 'POST',
      path: `${EST}/simpleenroll`,
      headers: CSR_HEADERS,
      body: (await freshCsr()).base64,
    });
    expect(enrolled.status, enrolled.text).toBe(200);
    // the admitted idle connections are cut at the handshake timeout, with a generous upper bound
    for (const ms of await Promise.all(open.map((i) => i.closed))) {
      expect(ms).toBeGreaterThanOrEqual(LIMITS.handshakeTimeoutMs - 100);
      expect(ms).toBeLessThan(10_000);
    }
  });

  it('gateway: past the per-address cap they are closed at once, TLS from another address completes, the rest time out', async () => {
    const gateway = f.svc.service.addresses.gateway!;
    const idle = await idleFlood(portOf(gateway));
    const open = await whenClosed(idle, FLOOD - LIMITS.maxConnectionsPerAddress);
    expect(open.length).toBe(LIMITS.maxConnectionsPerAddress);
    // without SNI the gateway refuses with a TLS alert: an answer all the same (a cut would be a reset)
    const answer = await new Promise<string>((resolve) => {
      const tls = tlsConnect({ host: '127.0.0.1', port: portOf(gateway), rejectUnauthorized: false }, () => {
        tls.destroy();
        resolve('handshake');
      });
      tls.on('error', (err) => resolve(err.message));
    });
    expect(answer).toMatch(/^handshake$|alert/);
    for (const ms of await Promise.all(open.map((i) => i.closed))) {
      expect(ms).toBeGreaterThanOrEqual(LIMITS.handshakeTimeoutMs - 100);
      expect(ms).toBeLessThan(10_000);
    }
  });
});

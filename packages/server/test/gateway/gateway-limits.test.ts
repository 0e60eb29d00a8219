import { generateKeyPairSync } from 'node:crypto';
import { request } from 'node:https';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawTls } from '../../../../test/support/raw-tls.ts';
import { type GatewayListener, startGateway } from '../../src/gateway/listener.ts';
import { startTestService, type TestService } from '../support/service.ts';
import { type GatewayFactory, issueDeviceCert, setupGatewayFactory } from './fixtures.ts';

/**
 * Slow and broken clients against a gateway listener with small limits (the service's own
 * gateway keeps the defaults): half a ClientHello, a connection that never speaks, more
 * connections than the cap. Each time the server cuts the offender off and keeps serving.
 */
/** The time limits the tests wait out. */
const SHORT_LIMIT_MS = 300;
/** Limits that no test runs into, however busy the machine. */
const PATIENT = { handshakeTimeoutMs: 600_000, idleTimeoutMs: 600_000 };
const portOf = (listener: GatewayListener) => Number(listener.address.split(':').pop());

describe('device gateway limits', () => {
  let svc: TestService;
  let demo: GatewayFactory;
  let gateway: GatewayListener;
  let noHandshake: GatewayListener;
  let noRequest: GatewayListener;
  let capped: GatewayListener;
  let slowHead: GatewayListener;
  let slowBody: GatewayListener;
  let port: number;
  let device: { key: string; cert: string };

  beforeAll(async () => {
    svc = await startTestService('sqlite');
    demo = await setupGatewayFactory(svc, 'demo');
    // Each time limit under test gets a listener of its own, the others patient: on a busy
    // machine a whole valid call (TLS handshake, request) may take longer than 300 ms.
    gateway = (await startGateway(svc.service.ctx, { listen: '127.0.0.1:0', limits: PATIENT }))!;
    noHandshake = (await startGateway(svc.service.ctx, {
      listen: '127.0.0.1:0',
      limits: { ...PATIENT, handshakeTimeoutMs: SHORT_LIMIT_MS },
    }))!;
    noRequest = (await startGateway(svc.service.ctx, {
      listen: '127.0.0.1:0',
      limits: { ...PATIENT, idleTimeoutMs: SHORT_LIMIT_MS },
    }))!;
    capped = (await startGateway(svc.service.ctx, {
      listen: '127.0.0.1:0',
      limits: { ...PATIENT, maxConnections: 2 },
    }))!;
    slowHead = (await startGateway(svc.service.ctx, {
      listen: '127.0.0.1:0',
      limits: { ...PATIENT, headersTimeoutMs: SHORT_LIMIT_MS, requestTimeoutMs: 600_000 },
    }))!;
    // a valid call sends its head at once and has no body: 1 s and 2 s are far more than it needs
    slowBody = (await startGateway(svc.service.ctx, {
      listen: '127.0.0.1:0',
      limits: { ...PATIENT, headersTimeoutMs: 1_000, requestTimeoutMs: 2_000 },
    }))!;
    port = Number(gateway.address.split(':').pop());
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const { pem } = await issueDeviceCert(svc, demo, {
      publicKeySpki: new Uint8Array(publicKey.export({ format: 'der', type: 'spki' })),
    });
    device = { key: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), cert: pem };
  });
  afterAll(async () => {
    await gateway?.close();
    await noHandshake?.close();
    await noRequest?.close();
    await capped?.close();
    await slowHead?.close();
    await slowBody?.close();
    await svc?.stop();
  });

  /** A whole, valid gateway call (Node's TLS client, key in memory). */
  function getDevice(
    to = port,
    servername: string | undefined = demo.host,
  ): Promise<{ status: number; body: any }> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: to,
          path: '/device',
          ...(servername === undefined ? {} : { servername }),
          ca: demo.rootPem,
          key: device.key,
          cert: device.cert,
          agent: false,
          // The tls-crt names the gateway host and localhost, not 127.0.0.1; the chain is still checked.
          checkServerIdentity: () => undefined,
        },
        (res) => {
          let text = '';
          res.on('data', (d) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
        },
      );
      req.on('error', reject);
      req.end();
    });
  }

  function open(to = port): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const socket = connect(to, '127.0.0.1', () => resolve(socket));
      socket.on('error', reject);
    });
  }

  /**
   * A TLS connection to `listener` once its handshake is done (with the device's certificate,
   * or none), read as raw HTTP/1.1.
   */
  function tlsOpen(listener: GatewayListener, client?: { key: string; cert: string }) {
    return rawTls({ address: listener.address, servername: demo.host, ca: demo.rootPem, ...client });
  }

  /** Resolves when the server has closed the socket (end of stream or reset). */
  function closedByServer(socket: Socket): Promise<void> {
    return new Promise((resolve) => {
      socket.on('error', () => {});
      socket.on('close', () => resolve());
      socket.resume();
    });
  }

  it('serves a valid call', async () => {
    const answer = await getDevice();
    expect(answer.status).toBe(200);
    expect(answer.body.factory).toBe('demo');
  });

  it('serves the one factory with a tls-crt to clients that send localhost or no SNI', async () => {
    expect((await getDevice(port, 'localhost')).body.factory).toBe('demo');
    expect((await getDevice(port, undefined)).body.factory).toBe('demo');
  });

  it('drops a truncated TLS handshake (half a ClientHello) and keeps serving', async () => {
    const socket = await open(portOf(noHandshake));
    // TLS record header announcing 512 bytes of handshake, then a ClientHello cut short.
    const hello = Buffer.alloc(64);
    Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]).copy(hello);
    socket.write(hello);
    await closedByServer(socket);
    expect(socket.bytesRead).toBe(0);
    expect((await getDevice()).status).toBe(200);
  });

  it('closes a connection that never sends anything after the handshake timeout', async () => {
    const socket = await open(portOf(noHandshake));
    await closedByServer(socket);
    expect(socket.bytesRead).toBe(0);
    expect((await getDevice()).status).toBe(200);
  });

  it('closes a TLS connection that never sends its request after the idle timeout', async () => {
    const link = await tlsOpen(noRequest, device);
    expect(link.socket.authorized).toBe(true);
    await link.closed;
    expect((await getDevice()).status).toBe(200);
  });

  it('enforces the connection cap and serves again once connections go', async () => {
    const cappedPort = portOf(capped);
    const held = [await open(cappedPort), await open(cappedPort)];
    while ((await capped.connections()) < 2) await new Promise((resolve) => setImmediate(resolve));
    // Past the cap the server closes a connection as it arrives; this listener's handshake
    // timeout is patient, so nothing else closes the held ones while the test runs.
    const extra = await open(cappedPort);
    await closedByServer(extra);
    expect(extra.bytesRead).toBe(0);
    expect(held.every((socket) => !socket.destroyed)).toBe(true);
    for (const socket of held) socket.destroy();
    while ((await capped.connections()) > 0) await new Promise((resolve) => setImmediate(resolve));
    expect((await getDevice(cappedPort)).status).toBe(200);
  });

  it('answers 408 to a client that drips its request head, certificate or not, past the headers timeout', async () => {
    // No client certificate: the gateway takes the handshake and judges the request (client-auth.ts),
    // so anyone can hold a connection this way. A header line every 50 ms keeps the socket from
    // ever being idle; only the headers timeout can end it (a Node HTTP server that never listens
    // itself, behind the TCP front, checked no timeouts before).
    const link = await tlsOpen(slowHead);
    link.socket.write('GET /device HTTP/1.1\r\nHost: x\r\n');
    link.drip((i) => `X-Drip-${i}: 1\r\n`, 50);
    await link.closed;
    const answer = link.received;
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(answer).toContain('"code":"request_timeout"');
    expect((await getDevice()).status).toBe(200);
  }, 60_000);

  it('answers 408 to a device that drips a request body past the request timeout, and serves again', async () => {
    // The gateway answers GET /device without reading a body: what Node does is send the 200
    // (keep-alive) at once, read and drop the body as it comes, and answer 408 once the whole
    // request has taken longer than requestTimeoutMs. A byte every 50 ms keeps the connection
    // from ever being idle, and 100,000 of them would take over an hour: only the request
    // timeout ends it (the gateway checked none before 7ee2cc3).
    const link = await tlsOpen(slowBody, device);
    link.socket.write('GET /device HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n');
    link.drip(() => 'x', 50);
    const first = await link.answer();
    expect(first.status, first.body).toBe(200);
    expect(first.head).not.toMatch(/\r\nconnection: close\r\n/i);
    const cut = await link.answer(first.end);
    await link.closed;
    expect(cut.status, cut.body).toBe(408);
    expect(cut.head).toMatch(/\r\ncontent-type: application\/problem\+json\r\n/i);
    expect(cut.head).toMatch(/\r\nconnection: close\r\n/i);
    expect(JSON.parse(cut.body)).toMatchObject({ status: 408, code: 'request_timeout' });
    expect(link.received.length).toBe(cut.end);
    expect((await getDevice(portOf(slowBody))).status).toBe(200);
  }, 60_000);
});

/**
 * The floor a device-link request cannot go below: a minimal Node HTTPS server (floor-server.js)
 * with the device-link's TLS options and certificate, one mutual-TLS handshake and one tiny
 * request per connection with the devices' own client certificates, measured in the same run.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { deviceLinkPin, type SimDevice } from './device-link-load.ts';
import { Failures, PinnedAgent, runPool, send } from './keep-alive-client.ts';
import { pin, processCpuMs } from './process-stats.ts';

export interface FloorRun {
  handshakes: number;
  failures: Failures;
  perSecond: number;
  serverMsPerHandshake: number;
  /** With `deviceRequests`: server CPU per connection that also made a device's requests. */
  deviceMsPerConnection?: number;
}

type Requests = readonly { method: string; body?: string }[];
const ONE_GET: Requests = [{ method: 'GET' }];
/** Connections of one kind between two CPU readings when two kinds are interleaved. */
const CHUNK = 50;

export async function measureFloor(options: {
  dataDir: string;
  host: string;
  devices: readonly SimDevice[];
  handshakes: number;
  concurrency: number;
  core: number | undefined;
  /**
   * The device floor: as many connections again, each making a device's requests with their
   * bodies, interleaved in chunks with the plain ones on the same server process so that both
   * figures see the same moment of a noisy machine.
   */
  deviceRequests?: (device: SimDevice) => Requests;
}): Promise<FloorRun> {
  const server = await startFloorServer(options.dataDir, options.host, options.core);
  try {
    const connect = (requests: (device: SimDevice) => Requests) => async (i: number) => {
      const device = options.devices[i % options.devices.length]!;
      const agent = new PinnedAgent(
        { host: '127.0.0.1', port: server.port, secureContext: device.secureContext, keepAlive: true },
        server.pin,
      );
      try {
        for (const r of requests(device))
          await send({ agent, tls: true, servername: options.host, path: '/', ...r });
      } finally {
        agent.destroy();
      }
    };
    const plain = connect(() => ONE_GET);
    const withRequests = options.deviceRequests ? connect(options.deviceRequests) : undefined;
    const warm = new Failures();
    await runPool(Math.min(100, options.handshakes), options.concurrency, plain, warm);
    if (withRequests)
      await runPool(Math.min(100, options.handshakes), options.concurrency, withRequests, warm);
    const failures = new Failures();
    const deviceFailures = new Failures();
    let seconds = 0;
    let cpu = 0;
    let deviceCpu = 0;
    const chunk = withRequests ? CHUNK : options.handshakes;
    for (let from = 0; from < options.handshakes; from += chunk) {
      const count = Math.min(chunk, options.handshakes - from);
      const cpu0 = processCpuMs(server.pid);
      const start = performance.now();
      await runPool(count, options.concurrency, (i) => plain(from + i), failures);
      seconds += (performance.now() - start) / 1000;
      const cpu1 = processCpuMs(server.pid);
      cpu += cpu1 - cpu0;
      if (!withRequests) continue;
      await runPool(count, options.concurrency, (i) => withRequests(from + i), deviceFailures);
      deviceCpu += processCpuMs(server.pid) - cpu1;
    }
    const done = options.handshakes - failures.count;
    const deviceDone = options.handshakes - deviceFailures.count;
    failures.addAll(deviceFailures, 'device floor: ');
    return {
      handshakes: done,
      failures,
      perSecond: done / seconds,
      serverMsPerHandshake: cpu / done,
      ...(withRequests ? { deviceMsPerConnection: deviceCpu / deviceDone } : {}),
    };
  } finally {
    server.stop();
  }
}

/**
 * The floor of one request on a connection already open: the same server, `bodies` POSTed
 * (one per device, on that device's keep-alive mutual-TLS connection, opened before the
 * clock), each body read and answered with 200 "ok". Server CPU per request, ms.
 */
export async function measureRequestFloor(options: {
  dataDir: string;
  host: string;
  devices: readonly SimDevice[];
  bodies: readonly string[];
  connections: number;
  concurrency: number;
  core: number | undefined;
}): Promise<{ requests: number; failures: Failures; serverMsPerRequest: number }> {
  const server = await startFloorServer(options.dataDir, options.host, options.core);
  const failures = new Failures();
  let cpu = 0;
  try {
    for (let from = 0; from < options.bodies.length; from += options.connections) {
      const count = Math.min(options.connections, options.bodies.length - from);
      const agents = Array.from(
        { length: count },
        (_, i) =>
          new PinnedAgent(
            {
              host: '127.0.0.1',
              port: server.port,
              secureContext: options.devices[(from + i) % options.devices.length]!.secureContext,
              keepAlive: true,
              maxSockets: 1,
            },
            server.pin,
          ),
      );
      const call = async (i: number, method: string, body?: string) => {
        await send({
          agent: agents[i]!,
          tls: true,
          servername: options.host,
          method,
          path: '/',
          ...(body === undefined ? {} : { body }),
        });
      };
      // a connection that failed to open is a failure, not a handshake inside the clock
      const open = new Set<number>();
      await runPool(count, options.concurrency, (i) => call(i, 'GET').then(() => void open.add(i)), failures);
      const cpu0 = processCpuMs(server.pid);
      await runPool(
        count,
        options.concurrency,
        async (i) => {
          if (open.has(i)) await call(i, 'POST', options.bodies[from + i]!);
        },
        failures,
      );
      cpu += processCpuMs(server.pid) - cpu0;
      for (const agent of agents) agent.destroy();
    }
    const requests = options.bodies.length - failures.count;
    return { requests, failures, serverMsPerRequest: cpu / requests };
  } finally {
    server.stop();
  }
}

/**
 * floor-server.js on a free port, pinned to `core`, with the certificate the load generator
 * accepts from it (the device-link's of `dataDir`, for `host`).
 */
async function startFloorServer(
  dataDir: string,
  host: string,
  core: number | undefined,
): Promise<{ port: number; pid: number; pin: Buffer; stop(): void }> {
  const pinned = deviceLinkPin(dataDir, host);
  const child = spawn(process.execPath, [join(import.meta.dirname, 'floor-server.js'), dataDir], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      child.once('exit', (code) => reject(new Error(`the floor server exited ${code}`)));
    });
    pin(child.pid!, core);
    return { port, pid: child.pid!, pin: pinned, stop: () => child.kill('SIGTERM') };
  } catch (error) {
    child.kill('SIGTERM');
    throw error;
  }
}

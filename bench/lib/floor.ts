/**
 * The floor a device-link request cannot go below: a minimal Node HTTPS server (floor-server.js)
 * with the device-link's TLS options and certificate, one mutual-TLS handshake and one tiny
 * request per connection with the devices' own client certificates, measured in the same run.
 */
import { spawn } from 'node:child_process';
import { Agent } from 'node:https';
import { join } from 'node:path';
import type { SimDevice } from './device-link-load.ts';
import { Failures, runPool, send } from './keep-alive-client.ts';
import { pin, processCpuMs } from './process-stats.ts';

export interface FloorRun {
  handshakes: number;
  failures: Failures;
  perSecond: number;
  serverMsPerHandshake: number;
}

export async function measureFloor(options: {
  dataDir: string;
  host: string;
  devices: readonly SimDevice[];
  handshakes: number;
  concurrency: number;
  core: number | undefined;
}): Promise<FloorRun> {
  const child = spawn(process.execPath, [join(import.meta.dirname, 'floor-server.js'), options.dataDir], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      child.once('exit', (code) => reject(new Error(`the floor server exited ${code}`)));
    });
    pin(child.pid!, options.core);
    const one = async (i: number) => {
      const device = options.devices[i % options.devices.length]!;
      const agent = new Agent({
        host: '127.0.0.1',
        port,
        secureContext: device.secureContext,
        keepAlive: true,
      });
      try {
        await send({ agent, tls: true, servername: options.host, method: 'GET', path: '/' });
      } finally {
        agent.destroy();
      }
    };
    const warm = new Failures();
    await runPool(Math.min(100, options.handshakes), options.concurrency, one, warm);
    const failures = new Failures();
    const cpu0 = processCpuMs(child.pid!);
    const start = performance.now();
    await runPool(options.handshakes, options.concurrency, one, failures);
    const seconds = (performance.now() - start) / 1000;
    const done = options.handshakes - failures.count;
    return {
      handshakes: done,
      failures,
      perSecond: done / seconds,
      serverMsPerHandshake: (processCpuMs(child.pid!) - cpu0) / done,
    };
  } finally {
    child.kill('SIGTERM');
  }
}

import type { AddressInfo, Server } from 'node:net';
import { parseListen } from '../config/load.ts';

/**
 * Binds a listener to a configured `host:port` (port 0 picks a free one) and answers the
 * address actually bound, as printed and written to listen.json.
 */
export async function listenOn(server: Server, listen: string): Promise<string> {
  const { host, port } = parseListen(listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  return `${host.includes(':') ? `[${host}]` : host}:${bound.port}`;
}

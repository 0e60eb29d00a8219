// The bench's floor: a minimal Node HTTPS server with the device-link's own TLS options and
// certificate (argv: data dir), answering every request, its body read, with 200 "ok". Prints its port.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { join } from 'node:path';
import { register } from 'tsx/esm/api';

register();
const { deviceLinkTlsOptions } = await import('../../packages/server/src/devicelink/tls-options.ts');
const dir = process.argv[2];
const server = createServer(
  deviceLinkTlsOptions({
    cert: readFileSync(join(dir, 'device-link-tls.pem'), 'utf8'),
    key: readFileSync(join(dir, 'device-link-tls.key'), 'utf8'),
  }),
  (req, res) => {
    // what the device-link does first on a connection: read the client certificate (identity.ts)
    req.socket.getPeerX509Certificate();
    if (req.method === 'GET') {
      res.end('ok');
      return;
    }
    // a request body (the device floor's, bench:issue's request floor) is read whole first
    req.resume();
    req.on('end', () => res.end('ok'));
  },
);
server.listen(0, '127.0.0.1', () => console.log(server.address().port));

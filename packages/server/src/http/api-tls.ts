import { readFileSync } from 'node:fs';
import type { TlsOptions } from 'node:tls';
import { isLoopbackHost, KeyferryError } from '@keyferry/core';
import type { Config } from '../config/schema.ts';
import { SERVER_TLS_POLICY } from './tls-policy.ts';

/**
 * The HTTPS options of the management API from `api.tls`, or undefined for plain HTTP. Plain
 * HTTP is refused on an address other machines can reach unless `api.insecure` says a proxy
 * in front terminates TLS.
 */
export function managementApiTls(api: Config['api'], host: string): TlsOptions | undefined {
  if (!api.tls) {
    if (!isLoopbackHost(host) && !api.insecure) {
      throw new KeyferryError(
        'config_invalid',
        `the management API would listen on ${host} without TLS, so tokens would cross the network in clear: set api.tls {cert, key} in the config, bind api.listen to 127.0.0.1, or set api.insecure: true if a TLS proxy in front terminates TLS`,
      );
    }
    return undefined;
  }
  const read = (what: string, file: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new KeyferryError(
        'config_invalid',
        `cannot read api.tls.${what} ${file}: ${(err as Error).message}`,
      );
    }
  };
  const options: TlsOptions = {
    ...SERVER_TLS_POLICY,
    cert: read('cert', api.tls.cert),
    key: read('key', api.tls.key),
  };
  if (api.tls.clientCa) {
    options.ca = read('clientCa', api.tls.clientCa);
    options.requestCert = true;
    options.rejectUnauthorized = true;
  }
  return options;
}

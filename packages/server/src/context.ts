import type { Logger } from 'pino';
import type { Config } from './config/schema.ts';
import type { KeyCustody, TlsKeyStore } from './keys/custody.ts';
import type { ServiceMetrics } from './metrics/service-metrics.ts';
import type { CrlRefresher } from './revocation/refresh.ts';
import type { Database } from './storage/database.ts';

/** What request handlers and domain services share for the life of the process. */
export interface ServiceContext {
  config: Config;
  database: Database;
  /** CA keys (and, with soft custody, everything). */
  custody: KeyCustody;
  /** Keys of TLS servers in this process: the device gateway's tls-crt key. */
  tlsKeys: TlsKeyStore;
  log: Logger;
  /** Re-signs CRLs after the device-link's revocations, off the request (revocation/refresh.ts). */
  crlRefresher: CrlRefresher;
  /** Set by the running service: true while every listener is bound (GET /readyz). */
  lifecycle?: { serving: boolean };
  /** Prometheus metrics of this service (GET /metrics); absent in tools that serve nothing. */
  metrics?: ServiceMetrics;
}

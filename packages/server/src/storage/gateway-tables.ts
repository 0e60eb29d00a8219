import type { Generated } from 'kysely';

/** A device seen by the device gateway (migration 003). */
export interface GatewayDevicesTable {
  id: Generated<number>;
  factory_id: number;
  /** The client certificate's CN. */
  name: string;
  /** The client certificate's OU (the factory it names). */
  factory_ou: string;
  /** Lowercase hex SHA-256 of the certificate DER last used. */
  cert_fingerprint: string;
  /** Lowercase hex serial of the certificate last used. */
  cert_serial: string;
  first_seen: string;
  last_seen: string;
}

/** The current signed CRL of an intermediate CA (migration 003). */
export interface CrlsTable {
  ca_id: number;
  crl_number: number;
  this_update: string;
  next_update: string;
  /** The entries the CRL lists, and the latest revocation time among them. */
  revoked_count: number;
  revoked_latest: string | null;
  /** The CA's revocation version (ca_revocation_versions) it was signed at; null before migration 017. */
  revocation_version: number | null;
  /** DER, base64. */
  der: string;
}

/**
 * A CA's revocations counted by the triggers on `certificates` (migration 017), spread over a
 * few rows per CA; the CA's revocation version is the sum of its rows.
 */
export interface CaRevocationVersionsTable {
  ca_id: number;
  shard: number;
  version: number;
}

export interface GatewayTables {
  gateway_devices: GatewayDevicesTable;
  crls: CrlsTable;
  ca_revocation_versions: CaRevocationVersionsTable;
}

import type { Generated } from 'kysely';
import type { GatewayTables } from './gateway-tables.ts';

/**
 * Row types of every table. Timestamps are ISO-8601 UTC strings and booleans are 0/1
 * integers, so one migration set and one query builder serve SQLite and PostgreSQL alike.
 */
export interface FactoriesTable {
  id: Generated<number>;
  name: string;
  repo_id: string;
  subdomain: string;
  created_at: string;
}

export interface ApiTokensTable {
  id: string;
  factory_id: number;
  description: string;
  /** Space-separated scopes: `read`, `write`. */
  scopes: string;
  /** SHA-256 (hex) of the secret part; tokens are 256-bit random, so a fast hash suffices. */
  secret_hash: string;
  created_at: string;
  revoked_at: string | null;
  /** ISO time after which the token is refused; null: it never expires. */
  expires_at: string | null;
}

export interface FactoryPkiTable {
  factory_id: number;
  /** Custody reference of the device gateway's TLS key, made by the service. */
  tls_key_ref: string;
  tls_csr: string;
  root_crt: string | null;
  tls_crt: string | null;
  ca_crt: string | null;
  updated_at: string;
  updated_by: string | null;
  /** A new gateway TLS key (keys ca rotate-tls) until the root signs its CSR. */
  pending_tls_key_ref: string | null;
  pending_tls_csr: string | null;
  /** The last CRL the root signed over device CAs (fioctl's ca-revoke-crl), PEM. */
  ca_revoke_crl: string | null;
  /** JSON array of base-10 serials: device CAs on hold (CRL reason 6). */
  disabled_ca_serials: Generated<string>;
  /** PEM bundle of the device CAs the root revoked (any other CRL reason); out of ca-crt. */
  revoked_ca_crt: string | null;
  /** When and by whom the root CA was set (fioctl's change-meta created-at/-by). */
  created_at: string | null;
  created_by: string | null;
}

/** An online device CA (fioctl's online-ca): the service holds its key; the root signs it. */
export interface OnlineCasTable {
  id: Generated<number>;
  factory_id: number;
  key_ref: string;
  csr: string;
  /** PEM, once the root's certificate came in ca-crt. */
  certificate: string | null;
  created_at: string;
  signed_at: string | null;
}

export interface CustodyKeysTable {
  id: string;
  backend: string;
  purpose: string;
  /** DER SubjectPublicKeyInfo, base64. */
  public_key: string;
  /** soft backend: AES-256-GCM-wrapped PKCS#8 (base64); pkcs11 backend: the token object label. */
  material: string;
  created_at: string;
}

export interface AuditLogTable {
  id: Generated<number>;
  at: string;
  factory_id: number | null;
  actor: string;
  action: string;
  object: string;
  detail: string;
  correlation_id: string;
  /** How many times the entry happened (counted refusals, recordCountedAudit); 1 otherwise. */
  count: Generated<number>;
  /** Counted entries only: caller, reason, object and minute; NULL for every other entry. */
  aggregate_key: string | null;
}

export interface Tables extends El2gTables, GatewayTables {
  factories: FactoriesTable;
  api_tokens: ApiTokensTable;
  factory_pki: FactoryPkiTable;
  online_cas: OnlineCasTable;
  custody_keys: CustodyKeysTable;
  audit_log: AuditLogTable;
}

export type SecureObjectType = 'KEYPAIR' | 'CERTIFICATE';
export type ProvisioningState =
  | 'GENERATION_ON_CONNECTION'
  | 'GENERATION_TRIGGERED'
  | 'GENERATION_COMPLETED'
  | 'PROVISIONING_COMPLETED'
  | 'GENERATION_FAILED'
  | 'PROVISIONING_FAILED';

export interface FactoryEl2gTable {
  factory_id: number;
  plan: 'evaluation' | 'commercial';
  enabled_at: string;
  subscription_start: string;
  max_devices: number;
  max_keypairs: number;
  max_certificates: number;
  evaluation_days: number;
}

export interface FactoryProductsTable {
  factory_id: number;
  nc12: string;
  added_at: string;
}

export interface DeviceGroupsTable {
  id: Generated<number>;
  factory_id: number;
  nc12: string;
  name: string;
  production: number;
  created_at: string;
}

export interface CaRequestsTable {
  id: Generated<number>;
  factory_id: number;
  ca_name: string;
  key_ref: string;
  csr: string;
  created_at: string;
  completed_at: string | null;
}

export interface IntermediateCasTable {
  id: Generated<number>;
  factory_id: number;
  name: string;
  algorithm: string;
  key_ref: string;
  certificate: string;
  created_at: string;
  updated_at: string;
}

export interface SecureObjectsTable {
  id: Generated<number>;
  factory_id: number;
  name: string;
  type: SecureObjectType;
  object_id: string;
  ca_id: number | null;
  keypair_id: number | null;
  validity_days: number | null;
  /** Validity of a renewed certificate (simplereenroll); NULL = 365 days. */
  renewal_validity_days: number | null;
  /** Days before expiry from which devices renew; NULL = 30. */
  renewal_window_days: number | null;
  /** Validity of issued certificates in seconds; wins over validity_days when set. */
  validity_seconds: number | null;
  /** Validity of a renewed certificate in seconds; wins over renewal_validity_days when set. */
  renewal_validity_seconds: number | null;
  /** Seconds before expiry from which devices renew; wins over renewal_window_days when set. */
  renewal_window_seconds: number | null;
  created_at: string;
}

export interface GroupObjectsTable {
  group_id: number;
  secure_object_id: number;
  assigned_at: string;
}

export interface DevicesTable {
  id: Generated<number>;
  factory_id: number;
  device_id: string;
  group_id: number;
  nc12: string;
  added_at: string;
  deleted_at: string | null;
  last_connection: string | null;
  /** Index into DEVICE_STATES (allowlist/device-state.ts); kept by setObjectState. */
  state_rank: Generated<number>;
  /** When state_rank last changed (the newest device_objects.updated_at). */
  state_at: Generated<string | null>;
  /** PostgreSQL: the device's enrollments written, the guard of the next (migration 019). */
  enrollment_count: Generated<number>;
}

export interface DeviceObjectsTable {
  device_row_id: number;
  secure_object_id: number;
  state: ProvisioningState;
  reason: string | null;
  updated_at: string;
}

export interface CertificatesTable {
  id: Generated<number>;
  factory_id: number;
  device_row_id: number | null;
  secure_object_id: number | null;
  ca_id: number;
  serial_hex: string;
  public_key_sha256: string;
  subject_cn: string;
  pem: string;
  not_before: string;
  not_after: string;
  issued_at: string;
  revoked_at: string | null;
  revocation_reason: string | null;
  /** When an operator marked this (live) certificate for rotation (el2g devices rotate). */
  rotation_requested_at: Generated<string | null>;
}

export interface BulkJobsTable {
  id: string;
  factory_id: number;
  status: 'queued' | 'running' | 'done' | 'failed';
  /** JSON `{nc12, production, deviceIds}`: the node that claims the job (or resumes it) reads the ids here. */
  request: string;
  total: number;
  processed: number;
  result: string;
  created_at: string;
  finished_at: string | null;
  /** Who submitted the job; the node that runs it records the change under this actor. */
  actor: string;
  correlation_id: string;
  /** The node holding the job while it runs, and until when; an expired lease is claimable. */
  lease_owner: string | null;
  lease_until: string | null;
}

export interface El2gTables {
  factory_el2g: FactoryEl2gTable;
  factory_products: FactoryProductsTable;
  device_groups: DeviceGroupsTable;
  ca_requests: CaRequestsTable;
  intermediate_cas: IntermediateCasTable;
  secure_objects: SecureObjectsTable;
  group_objects: GroupObjectsTable;
  devices: DevicesTable;
  device_objects: DeviceObjectsTable;
  certificates: CertificatesTable;
  bulk_jobs: BulkJobsTable;
}

/**
 * Every refusal keyferry makes has a stable code from this closed list. The HTTP status and
 * whether the message may be shown to the client live beside the code, so a route never
 * chooses them ad hoc. docs/api.md lists the same codes; a test keeps the two in sync.
 */
export const ERROR_CODES = {
  // request shape
  invalid_json: 400,
  invalid_request: 400,
  unknown_field: 400,
  body_too_large: 413,
  unsupported_media_type: 415,
  // refused by the HTTP parser or the connection limits, before any route runs
  request_timeout: 408,
  url_too_long: 414,
  expectation_failed: 417,
  headers_too_large: 431,
  // identity and access
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  conflict: 409,
  // factory PKI
  pki_exists: 409,
  pki_missing: 409,
  csr_invalid: 400,
  csr_key_reused: 400,
  certificate_invalid: 400,
  certificate_mismatch: 400,
  untrusted_chain: 400,
  // allow-list and plan
  invalid_device_id: 400,
  unknown_product: 400,
  device_in_other_group: 409,
  device_quota_exceeded: 403,
  object_quota_exceeded: 403,
  evaluation_expired: 403,
  // device-link
  device_not_allowlisted: 403,
  untrusted_identity: 403,
  unknown_label: 404,
  object_not_issued: 409,
  rate_limited: 429,
  // device gateway
  client_certificate_required: 403,
  untrusted_client_certificate: 403,
  wrong_factory: 403,
  certificate_revoked: 403,
  // configuration and custody
  config_invalid: 500,
  key_custody_error: 500,
  internal: 500,
  unavailable: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * The one error type of keyferry. `expose` is false for server faults: the client then sees
 * a generic message and a correlation id, and only the log sees the detail. A server-side
 * refusal whose message tells the client what is wrong and that a retry will do (the server's
 * storage is full) is made with `expose: true`.
 */
export class KeyferryError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly expose: boolean;
  readonly detail: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options?: { detail?: Record<string, unknown>; cause?: unknown; expose?: boolean },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'KeyferryError';
    this.code = code;
    this.status = ERROR_CODES[code];
    this.expose = options?.expose ?? this.status < 500;
    this.detail = options?.detail;
  }
}

export function isKeyferryError(value: unknown): value is KeyferryError {
  return value instanceof KeyferryError;
}

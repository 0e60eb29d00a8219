/**
 * Why the agent stopped, each with its own exit code so that a unit file, a factory script or
 * a test can tell "add this device to the allow-list" from "the network is down" without
 * parsing text. The numbers are part of the agent's interface (README.md lists them).
 */
export const EXIT_CODES = {
  /** Unexpected fault (a bug): the message and, with KEYFERRY_DEBUG=1, the stack. */
  internal: 1,
  /** Bad command line (commander). */
  usage: 2,
  /** The env file named by --env-file (or the default) does not exist or cannot be read. */
  env_file_missing: 3,
  /** A setting is missing (REPOID) or malformed (DAEMON_INTERVAL, GENERIC_KEYPAIRS, …). */
  setting_invalid: 4,
  /** A file the settings name (root.crt, DEVICE_LINK_CA) cannot be read or holds no certificate. */
  file_unreadable: 5,
  /** PKCS11_MODULE does not load as a PKCS#11 module. */
  se_module: 6,
  /** No token with PKCS11_TOKEN_LABEL (or, soft backend, SE_DIR is not a secure element). */
  se_token: 7,
  /** The token refused PKCS11_PIN. */
  se_pin: 8,
  /** The secure element lacks the vendor identity (UID, key 0xF0000000, certificate 0xF0000001). */
  se_no_identity: 9,
  /** An object id the service assigned already holds a key the agent did not generate. */
  se_foreign_key: 10,
  /** The secure element has no room for another object. */
  se_full: 11,
  /** Any other secure element failure. */
  se_error: 12,
  /** The device-link server's certificate does not verify against DEVICE_LINK_CA. */
  server_untrusted: 13,
  /** $SOTA_DIR/sota.toml could not be written. */
  sota_write: 14,
  /** The service refused the device for good: not allow-listed. */
  not_allowlisted: 20,
  /** The factory's evaluation ended or a plan limit is reached. */
  plan_limit: 21,
  /** Any other refusal the service will repeat (unknown product, untrusted identity, bad CSR…). */
  refused: 22,
  /** AKLITE_START_CMD failed. */
  aklite_start: 23,
  /** aws-demo: the secure element lacks the AWS IoT pair (key 0x83000044, certificate 0x83000045). */
  aws_not_provisioned: 24,
  /** A transient failure with retries disabled (--once): run again later. EX_TEMPFAIL. */
  transient: 75,
} as const;

export type AgentErrorKind = keyof typeof EXIT_CODES;

/** A failure the agent reports as one `ERROR: …` line and the exit code of its kind. */
export class AgentError extends Error {
  readonly kind: AgentErrorKind;
  /** Seconds the service asked the agent to wait (429 / 503 Retry-After). */
  readonly retryAfter: number | undefined;

  constructor(kind: AgentErrorKind, message: string, options?: { cause?: unknown; retryAfter?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AgentError';
    this.kind = kind;
    this.retryAfter = options?.retryAfter;
  }

  get exitCode(): number {
    return EXIT_CODES[this.kind];
  }

  /** Failures worth retrying every DAEMON_INTERVAL: the network, the server's 5xx and 429. */
  get transient(): boolean {
    return this.kind === 'transient';
  }

  /**
   * Failures auto-register waits out in its own process, every DAEMON_INTERVAL, unless
   * --once: the transient ones, a device that is not allow-listed yet and a plan limit. The
   * operator lifts the last two without touching the device, and the unit (like LmP's) has no
   * `Restart=`, so the agent must still be running when that happens — as the LmP script was.
   */
  get retriedByDaemon(): boolean {
    return this.transient || this.kind === 'not_allowlisted' || this.kind === 'plan_limit';
  }
}

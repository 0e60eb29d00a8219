import { availableParallelism } from 'node:os';
import { DURATION_FORMAT, parseDuration } from '@keyferry/core';
import { z } from 'zod';
import {
  API_LIMITS,
  connectionLimitsSchema,
  DEVICE_LINK_LIMITS,
  GATEWAY_LIMITS,
} from '../http/connection-limits.ts';
import { API_RATE_LIMITS, bucketLimitSchema, DEVICE_LINK_RATE_LIMITS } from '../http/rate-limit.ts';
import { CRL_HELD_BYTES } from '../revocation/crl-store.ts';

/**
 * keyferryd's configuration. Every option has its default beside it; docs/configuration.md
 * repeats them. Unknown keys are errors (strict objects), so a typo never passes silently.
 */
const listen = z
  .string()
  .regex(/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'expected host:port, e.g. 127.0.0.1:8080')
  // (a value without a port is the regex's to refuse)
  .refine(
    (v) => Number(/:(\d{1,5})$/.exec(v)?.[1] ?? 0) <= 65_535,
    'the port is at most 65535 (0: any free port)',
  );

const sqliteStorage = z.strictObject({
  kind: z.literal('sqlite'),
  /** Database file; default `<dataDir>/keyferry.db`. */
  path: z.string().min(1).optional(),
});
const postgresStorage = z.strictObject({
  kind: z.literal('postgres'),
  /** e.g. postgres://user:pass@host:5432/keyferry */
  url: z.string().regex(/^postgres(ql)?:\/\//, 'expected a postgres:// URL'),
  /** Connection pool size. */
  poolSize: z.number().int().min(1).max(500).default(10),
});

const softCustody = z.strictObject({
  kind: z.literal('soft'),
  /** 32-byte master key (hex) file; made 0600 on first start. Default `<dataDir>/master.key`. */
  masterKeyFile: z.string().min(1).optional(),
});
const pkcs11Custody = z
  .strictObject({
    kind: z.literal('pkcs11'),
    module: z.string().min(1),
    tokenLabel: z.string().min(1),
    /** The user PIN, or `pinFile`: a file whose first line is the PIN (systemd LoadCredential=). */
    pin: z
      .string({
        // YAML reads `pin: 0123` as the number 123: a PIN must be quoted to keep its digits
        error: (issue) =>
          typeof issue.input === 'number'
            ? "a PIN is text: quote it (pin: '0123'), YAML reads bare digits as a number and drops leading zeros"
            : undefined,
      })
      .min(1)
      .optional(),
    pinFile: z.string().min(1).optional(),
    /**
     * Master key (hex) file wrapping the device gateway's TLS keys, which stay off the token:
     * Node's TLS server needs the key itself. Made 0600 on first start. Default `<dataDir>/master.key`.
     */
    masterKeyFile: z.string().min(1).optional(),
  })
  .refine((c) => (c.pin === undefined) !== (c.pinFile === undefined), {
    path: ['pin'],
    message:
      'give the token user PIN as keyCustody.pin or keyCustody.pinFile (a file keeps it out of the config): exactly one of the two',
  });

const product = z.strictObject({
  /** 12NC, 12 decimal digits. */
  nc12: z.string().regex(/^[0-9]{12}$/, 'a 12NC is 12 decimal digits'),
  name: z.string().min(1),
  /** PEM files of the CAs that verify the vendor identity of this product's secure elements. */
  trustAnchors: z.array(z.string().min(1)).default([]),
});

const plan = z.strictObject({
  /** `evaluation`: free for `evaluationDays` from enablement; `commercial`: yearly device quota. */
  kind: z.enum(['evaluation', 'commercial']).default('evaluation'),
  evaluationDays: z.number().int().min(1).default(30),
  maxDevicesPerYear: z.number().int().min(1).default(50_000),
  maxKeypairsPerDevice: z.number().int().min(1).default(2),
  maxCertificatesPerDevice: z.number().int().min(1).default(2),
});

const tlsFiles = z.strictObject({ cert: z.string().min(1), key: z.string().min(1) });

/** A duration in config (`7d`, `1h`, `30s`) as milliseconds. */
const crlDuration = z
  .string()
  .refine((t) => parseDuration(t) !== undefined, `a duration: ${DURATION_FORMAT}`)
  .transform((t) => parseDuration(t)! * 1000);

/** Default of `audit.retentionDays`: a year of audit history. */
export const AUDIT_RETENTION_DAYS = 365;

export const configSchema = z.strictObject({
  /** Where SQLite, the master key, the demo token and listen.json live. */
  dataDir: z.string().min(1).default('./data'),
  /**
   * Processes serving the listeners (node:cluster), all on the one database. Default: the
   * number of CPUs with a config file; 1 with the embedded defaults (the demo).
   */
  workers: z.number().int().min(1).max(256).optional(),
  /** DNS domain of the device-facing names: `<sub>.device-link.<domain>`, `<repoid>.ota-lite.<domain>`. */
  domain: z
    .string()
    .regex(
      /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/,
      'expected a lowercase DNS name',
    )
    .default('localhost'),
  storage: z.discriminatedUnion('kind', [sqliteStorage, postgresStorage]).default({ kind: 'sqlite' }),
  keyCustody: z.discriminatedUnion('kind', [softCustody, pkcs11Custody]).default({ kind: 'soft' }),
  api: z
    .strictObject({
      listen: listen.default('127.0.0.1:8080'),
      /**
       * TLS for the management API: PEM certificate (chain) and key files, and optionally a
       * CA bundle (`clientCa`) that makes it mutual TLS: clients then need a certificate it
       * signed, beside their token.
       */
      tls: z
        .strictObject({
          cert: z.string().min(1),
          key: z.string().min(1),
          clientCa: z.string().min(1).optional(),
        })
        .optional(),
      /** Allow plain HTTP on a non-loopback address (behind a TLS-terminating proxy only). */
      insecure: z.boolean().default(false),
      /** Largest accepted request body. */
      bodyLimitBytes: z
        .number()
        .int()
        .min(1024)
        .max(64 * 1024 * 1024)
        .default(8 * 1024 * 1024),
      /** Timeouts and connection caps (docs/configuration.md, docs/reliability.md). */
      limits: connectionLimitsSchema(API_LIMITS),
      /**
       * Behind a reverse proxy: take the client's protocol, host and address from
       * X-Forwarded-Proto / X-Forwarded-Host / X-Forwarded-For (Fastify's trustProxy), so the
       * console's origin check and its Secure cookie see https. Only when every connection comes
       * from the proxy: anyone reaching keyferryd directly could set them.
       */
      trustProxy: z.boolean().default(false),
      /** Token buckets per API token and for console sign-ins (docs/configuration.md "Rate limits"). */
      rateLimits: z
        .strictObject({
          perToken: bucketLimitSchema(API_RATE_LIMITS.perToken),
          signInPerAddress: bucketLimitSchema(API_RATE_LIMITS.signInPerAddress),
          signInPerToken: bucketLimitSchema(API_RATE_LIMITS.signInPerToken),
        })
        .prefault({}),
    })
    .prefault({}),
  deviceLink: z
    .strictObject({
      enabled: z.boolean().default(true),
      listen: listen.default('127.0.0.1:9443'),
      tls: tlsFiles.optional(),
      /**
       * Where the keys of the TLS material keyferryd makes (without `tls`) are kept: `files` in
       * the data dir (0600), or `custody`, wrapped by the master key in the database.
       */
      tlsKeys: z.enum(['files', 'custody']).default('files'),
      limits: connectionLimitsSchema(DEVICE_LINK_LIMITS),
      /** Token buckets per vendor identity and per client address (docs/configuration.md "Rate limits"). */
      rateLimits: z
        .strictObject({
          perIdentity: bucketLimitSchema(DEVICE_LINK_RATE_LIMITS.perIdentity),
          perAddress: bucketLimitSchema(DEVICE_LINK_RATE_LIMITS.perAddress),
        })
        .prefault({}),
    })
    .refine((d) => !(d.tls && d.tlsKeys === 'custody'), {
      path: ['tlsKeys'],
      message:
        'custody keeps the keys of the TLS material keyferryd makes, but deviceLink.tls names your own files: drop one of the two',
    })
    .prefault({}),
  gateway: z
    .strictObject({
      enabled: z.boolean().default(true),
      listen: listen.default('127.0.0.1:8443'),
      limits: connectionLimitsSchema(GATEWAY_LIMITS),
    })
    .prefault({}),
  /** Products beyond the built-in SE050/SE051, or built-ins with their vendor trust anchors. */
  products: z.array(product).default([]),
  el2g: z
    .strictObject({
      /** Products a new factory starts with; more are added by `devices add` of a known 12NC. */
      defaultProducts: z.array(z.string().regex(/^[0-9]{12}$/)).default(['935389312472']),
      /** Plan of a new factory (EdgeLock 2GO's offer). */
      plan: plan.prefault({}),
    })
    .prefault({}),
  /**
   * A factory (with an admin token in `<dataDir>/<name>.token`) created on first start when the
   * database has none. Default: on with the embedded defaults, off when a config file is given.
   */
  demoFactory: z
    .strictObject({ enabled: z.boolean().optional(), name: z.string().min(1).default('demo') })
    .prefault({}),
  audit: z
    .strictObject({
      /** Audit entries older than this are deleted (hourly, and at start). */
      retentionDays: z.number().int().min(1).max(36_500).default(AUDIT_RETENTION_DAYS),
    })
    .prefault({}),
  /** CRLs: validity of a signed CRL, how long before nextUpdate it is re-signed, how often keyferryd checks, what it keeps in memory. */
  crl: z
    .strictObject({
      validity: crlDuration.prefault('7d'),
      renewBefore: crlDuration.prefault('1d'),
      checkInterval: crlDuration.prefault('5m'),
      /** Bytes of signed CRLs each process keeps in memory to send again (revocation/crl-store.ts). */
      heldBytes: z.number().int().min(0).default(CRL_HELD_BYTES),
    })
    .refine((c) => c.renewBefore < c.validity, 'crl.renewBefore must be shorter than crl.validity')
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    })
    .prefault({}),
});

/**
 * How many worker processes keyferryd runs: `workers`, else one per CPU for a configured
 * service, else 1 for the embedded defaults, a try-out where N copies of the process would
 * only multiply its memory.
 */
export function workerCount(config: Config, embeddedDefaults: boolean): number {
  return config.workers ?? (embeddedDefaults ? 1 : availableParallelism());
}

export type Config = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;

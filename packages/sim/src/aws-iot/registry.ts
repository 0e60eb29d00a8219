import { randomBytes, randomUUID } from 'node:crypto';
import { fromPem, type ParsedCertificate, parseCertificate, toPem, verifyChain } from '@keyferry/core';
import { AwsError } from './aws-error.ts';

export type CaStatus = 'ACTIVE' | 'INACTIVE';
export type AutoRegistrationStatus = 'ENABLE' | 'DISABLE';
export type CertificateStatus = 'ACTIVE' | 'INACTIVE' | 'REVOKED' | 'PENDING_ACTIVATION';
export type CertificateMode = 'DEFAULT' | 'SNI_ONLY';

export interface RegistrationConfig {
  templateBody?: string;
  roleArn?: string;
  templateName?: string;
}

/** A registered CA certificate. */
export interface CaRecord {
  readonly id: string;
  readonly arn: string;
  readonly pem: string;
  readonly cert: ParsedCertificate;
  readonly mode: CertificateMode;
  readonly created: Date;
  status: CaStatus;
  autoRegistrationStatus: AutoRegistrationStatus;
  registrationConfig: RegistrationConfig | undefined;
  modified: Date;
  customerVersion: number;
  generationId: string;
}

/** A registered device certificate. */
export interface CertificateRecord {
  readonly id: string;
  readonly arn: string;
  readonly pem: string;
  readonly cert: ParsedCertificate;
  readonly caId: string | undefined;
  readonly created: Date;
  status: CertificateStatus;
  modified: Date;
  /** Names of the IoT policies attached to this certificate (never evaluated). */
  readonly policies: Set<string>;
}

export interface ThingRecord {
  readonly name: string;
  readonly id: string;
  readonly arn: string;
  attributes: Record<string, string>;
  version: number;
  /** ARNs of the certificates attached to the thing. */
  readonly principals: Set<string>;
}

/** AWS's limit on a provisioning template body. */
export const MAX_TEMPLATE_BODY_CHARS = 10_240;

/**
 * The emulated account's IoT registry, in memory: its registration code, CA and device
 * certificates, things and policy attachments. Certificate ids are the SHA-256 hex of the
 * DER, as AWS's are.
 */
export class IotRegistry {
  readonly account: string;
  readonly region: string;
  readonly cas = new Map<string, CaRecord>();
  readonly certificates = new Map<string, CertificateRecord>();
  readonly things = new Map<string, ThingRecord>();
  readonly policies = new Map<string, string | undefined>();
  // AWS keeps one registration code per account until DeleteRegistrationCode.
  readonly registrationCode = randomBytes(32).toString('hex');

  constructor(options: { account?: string; region?: string } = {}) {
    this.account = options.account ?? '123456789012';
    this.region = options.region ?? 'us-east-1';
  }

  arn(kind: 'cacert' | 'cert' | 'thing', id: string): string {
    return `arn:aws:iot:${this.region}:${this.account}:${kind}/${id}`;
  }

  ca(id: string): CaRecord {
    const ca = this.cas.get(id);
    if (ca === undefined)
      throw new AwsError('ResourceNotFoundException', `CA certificate ${id} does not exist`);
    return ca;
  }

  certificate(id: string): CertificateRecord {
    const cert = this.certificates.get(id);
    if (cert === undefined)
      throw new AwsError('ResourceNotFoundException', `certificate ${id} does not exist`);
    return cert;
  }

  thing(name: string): ThingRecord {
    const thing = this.things.get(name);
    if (thing === undefined)
      throw new AwsError('ResourceNotFoundException', `Thing ${name} cannot be found.`);
    return thing;
  }

  /** Adds a CA (its checks are done by the caller: see registerCaCertificate). */
  addCa(
    cert: ParsedCertificate,
    options: Pick<CaRecord, 'status' | 'autoRegistrationStatus' | 'registrationConfig' | 'mode'>,
  ): CaRecord {
    const id = cert.fingerprintSha256;
    if (this.cas.has(id)) {
      throw new AwsError('ResourceAlreadyExistsException', `CA certificate ${id} is already registered`, {
        resourceId: id,
        resourceArn: this.arn('cacert', id),
      });
    }
    const now = new Date();
    const record: CaRecord = {
      id,
      arn: this.arn('cacert', id),
      pem: toPem(cert.der, 'CERTIFICATE'),
      cert,
      created: now,
      modified: now,
      customerVersion: 1,
      generationId: randomUUID(),
      ...options,
    };
    this.cas.set(id, record);
    return record;
  }

  /** Adds a device certificate issued by a registered CA (or its own CA when `caId` is undefined). */
  addCertificate(
    cert: ParsedCertificate,
    caId: string | undefined,
    status: CertificateStatus,
  ): CertificateRecord {
    const id = cert.fingerprintSha256;
    if (this.certificates.has(id)) {
      throw new AwsError('ResourceAlreadyExistsException', `certificate ${id} is already registered`, {
        resourceId: id,
        resourceArn: this.arn('cert', id),
      });
    }
    const now = new Date();
    const record: CertificateRecord = {
      id,
      arn: this.arn('cert', id),
      pem: toPem(cert.der, 'CERTIFICATE'),
      cert,
      caId,
      created: now,
      modified: now,
      status,
      policies: new Set(),
    };
    this.certificates.set(id, record);
    return record;
  }

  /**
   * The registered CA that `leaf` chains to (through `intermediates`), or undefined. With
   * `activeOnly` only ACTIVE CAs count (the data plane); the control plane takes any.
   */
  issuingCa(
    leaf: Uint8Array,
    intermediates: readonly Uint8Array[],
    activeOnly: boolean,
  ): CaRecord | undefined {
    const candidates = [...this.cas.values()].filter((ca) => !activeOnly || ca.status === 'ACTIVE');
    if (candidates.length === 0) return undefined;
    try {
      const path = verifyChain(
        leaf,
        intermediates,
        candidates.map((ca) => ca.cert.der),
        new Date(),
      );
      const anchor = path[path.length - 1];
      return anchor === undefined ? undefined : this.cas.get(anchor.fingerprintSha256);
    } catch {
      return undefined;
    }
  }

  /** Creates a thing or, when it exists, merges the attributes (RegisterThing semantics). */
  upsertThing(name: string, attributes: Record<string, string>): ThingRecord {
    const problem = thingNameProblem(name);
    if (problem !== undefined) throw new AwsError('InvalidRequestException', problem);
    const existing = this.things.get(name);
    if (existing !== undefined) {
      existing.attributes = { ...existing.attributes, ...attributes };
      existing.version += 1;
      return existing;
    }
    const thing: ThingRecord = {
      name,
      id: randomUUID(),
      arn: this.arn('thing', name),
      attributes: { ...attributes },
      version: 1,
      principals: new Set(),
    };
    this.things.set(name, thing);
    return thing;
  }
}

/** Decodes one PEM certificate from a request field; bad input is a CertificateValidationException. */
export function parsePemCertificate(pem: string, field: string): ParsedCertificate {
  try {
    return parseCertificate(fromPem(pem, 'CERTIFICATE'));
  } catch (error) {
    throw new AwsError(
      'CertificateValidationException',
      `${field} is not a PEM X.509 certificate: ${(error as Error).message}`,
    );
  }
}

const THING_NAME = /^[a-zA-Z0-9:_-]{1,128}$/;

/** Why `name` cannot name a thing (AWS's pattern), or undefined when it can. */
export function thingNameProblem(name: string): string | undefined {
  return THING_NAME.test(name)
    ? undefined
    : `thing name ${JSON.stringify(name)} is not [a-zA-Z0-9:_-]{1,128}`;
}

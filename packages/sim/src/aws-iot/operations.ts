import { verifyCertificateSignature } from '@keyferry/core';
import { AwsError } from './aws-error.ts';
import {
  type CaRecord,
  type CertificateMode,
  type CertificateRecord,
  type CertificateStatus,
  type IotRegistry,
  MAX_TEMPLATE_BODY_CHARS,
  parsePemCertificate,
  type RegistrationConfig,
} from './registry.ts';

/** The body and query of RegisterCACertificate. */
export interface RegisterCaInput {
  caCertificate?: unknown;
  verificationCertificate?: unknown;
  registrationConfig?: unknown;
  certificateMode?: unknown;
  setAsActive: boolean;
  allowAutoRegistration: boolean;
}

/**
 * RegisterCACertificate as AWS does it: in DEFAULT mode the verification certificate's CN
 * must be the account's registration code and its signature must verify with the CA's key.
 */
export function registerCaCertificate(registry: IotRegistry, input: RegisterCaInput): CaRecord {
  const mode = certificateMode(input.certificateMode);
  const caPem = requireString(input.caCertificate, 'caCertificate');
  const ca = parsePemCertificate(caPem, 'caCertificate');
  if (!ca.isCa)
    throw new AwsError(
      'CertificateValidationException',
      'caCertificate is not a CA certificate (basicConstraints CA:TRUE)',
    );
  if (Date.now() > ca.notAfter.getTime() || Date.now() < ca.notBefore.getTime()) {
    throw new AwsError('CertificateValidationException', 'caCertificate is outside its validity period');
  }
  const registrationConfig = parseRegistrationConfig(input.registrationConfig);
  if (mode === 'DEFAULT') {
    const verificationPem = requireString(input.verificationCertificate, 'verificationCertificate');
    const verification = parsePemCertificate(verificationPem, 'verificationCertificate');
    if (verification.subjectAttributes.CN !== registry.registrationCode) {
      throw new AwsError(
        'RegistrationCodeValidationException',
        'The verification certificate CN is not the registration code of this account: get it with GetRegistrationCode',
      );
    }
    if (!verifyCertificateSignature(verification, ca.spki)) {
      throw new AwsError(
        'CertificateValidationException',
        'The verification certificate is not signed by the key of caCertificate',
      );
    }
  }
  return registry.addCa(ca, {
    mode,
    status: input.setAsActive ? 'ACTIVE' : 'INACTIVE',
    autoRegistrationStatus: input.allowAutoRegistration ? 'ENABLE' : 'DISABLE',
    registrationConfig,
  });
}

/** The body and query of UpdateCACertificate. */
export interface UpdateCaInput {
  newStatus?: string | undefined;
  newAutoRegistrationStatus?: string | undefined;
  registrationConfig?: unknown;
  removeAutoRegistration?: unknown;
}

export function updateCaCertificate(registry: IotRegistry, id: string, input: UpdateCaInput): void {
  const ca = registry.ca(id);
  const status = oneOf(input.newStatus, ['ACTIVE', 'INACTIVE'] as const, 'newStatus');
  const auto = oneOf(
    input.newAutoRegistrationStatus,
    ['ENABLE', 'DISABLE'] as const,
    'newAutoRegistrationStatus',
  );
  const config =
    input.registrationConfig === undefined ? undefined : parseRegistrationConfig(input.registrationConfig);
  if (input.removeAutoRegistration !== undefined && typeof input.removeAutoRegistration !== 'boolean') {
    throw new AwsError('InvalidRequestException', 'removeAutoRegistration must be a boolean');
  }
  if (status !== undefined) ca.status = status;
  if (auto !== undefined) ca.autoRegistrationStatus = auto;
  if (config !== undefined) ca.registrationConfig = config;
  if (input.removeAutoRegistration === true) {
    ca.autoRegistrationStatus = 'DISABLE';
    ca.registrationConfig = undefined;
  }
  ca.modified = new Date();
  ca.customerVersion += 1;
}

/** The body and query of RegisterCertificate. */
export interface RegisterCertificateInput {
  certificatePem?: unknown;
  caCertificatePem?: unknown;
  status?: unknown;
  setAsActive: boolean | undefined;
}

/** RegisterCertificate: the certificate must chain to a registered CA. */
export function registerCertificate(
  registry: IotRegistry,
  input: RegisterCertificateInput,
): CertificateRecord {
  const cert = parsePemCertificate(requireString(input.certificatePem, 'certificatePem'), 'certificatePem');
  const intermediates: Uint8Array[] = [];
  if (input.caCertificatePem !== undefined) {
    const ca = parsePemCertificate(
      requireString(input.caCertificatePem, 'caCertificatePem'),
      'caCertificatePem',
    );
    if (!registry.cas.has(ca.fingerprintSha256)) {
      throw new AwsError(
        'CertificateValidationException',
        'caCertificatePem is not a registered CA certificate: register it first',
      );
    }
    intermediates.push(ca.der);
  }
  const ca = registry.issuingCa(cert.der, intermediates, false);
  if (ca === undefined) {
    throw new AwsError(
      'CertificateValidationException',
      'The certificate is not issued by a registered CA certificate (or is expired)',
    );
  }
  const status =
    oneOf(input.status, ['ACTIVE', 'INACTIVE', 'PENDING_ACTIVATION'] as const, 'status') ??
    (input.setAsActive === true ? 'ACTIVE' : 'INACTIVE');
  return registry.addCertificate(cert, ca.id, status);
}

/** UpdateCertificate: ACTIVE, INACTIVE or REVOKED; a revoked certificate stays revoked. */
export function updateCertificate(registry: IotRegistry, id: string, newStatus: string | undefined): void {
  const cert = registry.certificate(id);
  const status: CertificateStatus | undefined = oneOf(
    newStatus,
    ['ACTIVE', 'INACTIVE', 'REVOKED'] as const,
    'newStatus',
  );
  if (status === undefined) throw new AwsError('InvalidRequestException', 'newStatus is required');
  if (cert.status === 'REVOKED' && status !== 'REVOKED') {
    throw new AwsError(
      'CertificateStateException',
      `certificate ${id} is REVOKED and cannot become ${status}`,
    );
  }
  cert.status = status;
  cert.modified = new Date();
}

/** Validates a registrationConfig: a JSON templateBody of at most 10,240 characters with a roleArn. */
export function parseRegistrationConfig(value: unknown): RegistrationConfig | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new AwsError('InvalidRequestException', 'registrationConfig must be an object');
  }
  const { templateBody, roleArn, templateName } = value as Record<string, unknown>;
  const config: RegistrationConfig = {};
  if (templateName !== undefined) {
    throw new AwsError(
      'InvalidRequestException',
      'registrationConfig.templateName (named provisioning templates) is not emulated; use templateBody',
    );
  }
  if (templateBody !== undefined) {
    const body = requireString(templateBody, 'registrationConfig.templateBody');
    if (body.length > MAX_TEMPLATE_BODY_CHARS) {
      throw new AwsError(
        'InvalidRequestException',
        `registrationConfig.templateBody is ${body.length} characters; the limit is ${MAX_TEMPLATE_BODY_CHARS}`,
      );
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      throw new AwsError('InvalidRequestException', 'registrationConfig.templateBody is not JSON');
    }
    if (
      typeof parsed !== 'object' ||
      parsed === null ||
      typeof (parsed as { Resources?: unknown }).Resources !== 'object'
    ) {
      throw new AwsError(
        'InvalidRequestException',
        'registrationConfig.templateBody has no Resources object',
      );
    }
    config.templateBody = body;
    if (roleArn === undefined) {
      throw new AwsError(
        'InvalidRequestException',
        'registrationConfig.roleArn is required with a templateBody',
      );
    }
  }
  if (roleArn !== undefined) {
    const arn = requireString(roleArn, 'registrationConfig.roleArn');
    if (!/^arn:aws[a-z-]*:iam::\d{12}:role\/.+$/.test(arn)) {
      throw new AwsError(
        'InvalidRequestException',
        `registrationConfig.roleArn ${arn} is not an IAM role ARN`,
      );
    }
    config.roleArn = arn;
  }
  return config;
}

function certificateMode(value: unknown): CertificateMode {
  return oneOf(value, ['DEFAULT', 'SNI_ONLY'] as const, 'certificateMode') ?? 'DEFAULT';
}

function requireString(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '')
    throw new AwsError('InvalidRequestException', `${field} is required`);
  return value;
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[], field: string): T | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new AwsError('InvalidRequestException', `${field} must be one of ${allowed.join(', ')}`);
  }
  return value as T;
}

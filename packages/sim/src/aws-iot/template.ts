import { createHash } from 'node:crypto';
import { type CertificateRecord, type IotRegistry, thingNameProblem } from './registry.ts';

/** Why a provisioning template could not be applied (the certificate stays PENDING_ACTIVATION). */
export class ProvisioningError extends Error {}

/** What a template did, for the emulator's log and tests. */
export interface ProvisioningResult {
  readonly thingName: string | undefined;
  readonly certificateStatus: string;
  readonly policies: readonly string[];
}

// The certificate parameters JITP offers, read from the device certificate's subject.
const SUBJECT_PARAMETERS: Record<string, (cert: CertificateRecord) => string | undefined> = {
  'AWS::IoT::Certificate::Country': (c) => c.cert.subjectAttributes.C,
  'AWS::IoT::Certificate::Organization': (c) => c.cert.subjectAttributes.O,
  'AWS::IoT::Certificate::OrganizationalUnit': (c) => c.cert.subjectAttributes.OU,
  'AWS::IoT::Certificate::StateName': (c) => c.cert.subjectAttributes.ST,
  'AWS::IoT::Certificate::CommonName': (c) => c.cert.subjectAttributes.CN,
  'AWS::IoT::Certificate::SerialNumber': (c) => c.cert.subjectAttributes.serialNumber,
  'AWS::IoT::Certificate::DistinguishedNameQualifier': () => undefined,
  'AWS::IoT::Certificate::Id': (c) => c.id,
};

/**
 * Runs a JITP provisioning template for a just-registered certificate: resolves the
 * Parameters from the certificate subject (or their Default), then applies the Resources —
 * `AWS::IoT::Thing` (ThingName, AttributePayload; the certificate becomes its principal),
 * `AWS::IoT::Certificate` (Status) and `AWS::IoT::Policy` (PolicyName, or PolicyDocument
 * stored under the SHA-256 of the document). Values may use Ref, Fn::Join and Fn::Sub.
 * Everything is checked before anything changes, so a failing template changes nothing.
 */
export function runProvisioningTemplate(
  registry: IotRegistry,
  cert: CertificateRecord,
  templateBody: string,
): ProvisioningResult {
  const template: unknown = JSON.parse(templateBody);
  if (!isObject(template)) throw new ProvisioningError('the template body is not a JSON object');
  for (const section of ['Parameters', 'Resources']) {
    if (template[section] !== undefined && !isObject(template[section]))
      throw new ProvisioningError(`${section} is not an object`);
  }
  const declared = (template.Parameters ?? {}) as Record<string, { Default?: unknown } | null>;
  const values = new Map<string, string>();
  for (const [name, declaration] of Object.entries(declared)) {
    const fromCert = SUBJECT_PARAMETERS[name]?.(cert);
    const value = fromCert ?? (typeof declaration?.Default === 'string' ? declaration.Default : undefined);
    if (value === undefined) {
      throw new ProvisioningError(
        `the certificate has no value for template parameter ${name} and it has no Default`,
      );
    }
    values.set(name, value);
  }
  const resolve = (value: unknown, where: string): string => evaluate(value, values, where);

  let thing: { name: string; attributes: Record<string, string> } | undefined;
  let status: string | undefined;
  const policies: { name: string; document: string | undefined }[] = [];
  for (const [logicalId, resource] of Object.entries((template.Resources ?? {}) as Record<string, unknown>)) {
    const at = `Resources.${logicalId}`;
    if (!isObject(resource)) throw new ProvisioningError(`${at} is not an object`);
    const { Type } = resource;
    const Properties = resource.Properties ?? {};
    if (!isObject(Properties)) throw new ProvisioningError(`${at}.Properties is not an object`);
    if (Type === 'AWS::IoT::Thing') {
      const attributes: Record<string, string> = {};
      const payload = Properties.AttributePayload ?? {};
      if (!isObject(payload))
        throw new ProvisioningError(`${at}.Properties.AttributePayload is not an object`);
      for (const [key, v] of Object.entries(payload)) {
        attributes[key] = resolve(v, `${at}.Properties.AttributePayload.${key}`);
      }
      const name = resolve(Properties.ThingName, `${at}.Properties.ThingName`);
      const problem = thingNameProblem(name);
      if (problem !== undefined) throw new ProvisioningError(`${at}.Properties.ThingName: ${problem}`);
      thing = { name, attributes };
    } else if (Type === 'AWS::IoT::Certificate') {
      const id = resolve(Properties.CertificateId, `${at}.Properties.CertificateId`);
      if (id !== cert.id)
        throw new ProvisioningError(
          `${at}.Properties.CertificateId is not the certificate being provisioned`,
        );
      status =
        Properties.Status === undefined ? undefined : resolve(Properties.Status, `${at}.Properties.Status`);
      if (status !== undefined && !['ACTIVE', 'INACTIVE', 'PENDING_ACTIVATION'].includes(status)) {
        throw new ProvisioningError(
          `${at}.Properties.Status ${status} is not ACTIVE, INACTIVE or PENDING_ACTIVATION`,
        );
      }
    } else if (Type === 'AWS::IoT::Policy') {
      if (Properties.PolicyDocument !== undefined) {
        const doc = Properties.PolicyDocument;
        const document = typeof doc === 'string' ? doc : JSON.stringify(doc);
        policies.push({ name: createHash('sha256').update(document).digest('hex'), document });
      } else {
        policies.push({
          name: resolve(Properties.PolicyName, `${at}.Properties.PolicyName`),
          document: undefined,
        });
      }
    } else {
      throw new ProvisioningError(
        `${at}.Type ${String(Type)} is not AWS::IoT::Thing, AWS::IoT::Certificate or AWS::IoT::Policy`,
      );
    }
  }

  if (thing !== undefined) {
    const record = registry.upsertThing(thing.name, thing.attributes);
    record.principals.add(cert.arn);
  }
  for (const policy of policies) {
    if (!registry.policies.has(policy.name)) registry.policies.set(policy.name, policy.document);
    cert.policies.add(policy.name);
  }
  if (status !== undefined) {
    cert.status = status as CertificateRecord['status'];
    cert.modified = new Date();
  }
  return { thingName: thing?.name, certificateStatus: cert.status, policies: policies.map((p) => p.name) };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function evaluate(value: unknown, values: ReadonlyMap<string, string>, where: string): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const entries = Object.entries(value);
    const [fn, arg] = entries[0] ?? [];
    if (entries.length === 1 && fn === 'Ref' && typeof arg === 'string') {
      const v = values.get(arg);
      if (v === undefined) throw new ProvisioningError(`${where}: Ref ${arg} is not a declared parameter`);
      return v;
    }
    if (
      entries.length === 1 &&
      fn === 'Fn::Join' &&
      Array.isArray(arg) &&
      typeof arg[0] === 'string' &&
      Array.isArray(arg[1])
    ) {
      return (arg[1] as unknown[]).map((part) => evaluate(part, values, where)).join(arg[0]);
    }
    if (entries.length === 1 && fn === 'Fn::Sub' && typeof arg === 'string') {
      return arg.replace(/\$\{([^}]+)\}/g, (_, name: string) => {
        const v = values.get(name);
        if (v === undefined)
          throw new ProvisioningError(`${where}: Fn::Sub names ${name}, not a declared parameter`);
        return v;
      });
    }
  }
  throw new ProvisioningError(`${where}: only strings, Ref, Fn::Join and Fn::Sub are emulated`);
}

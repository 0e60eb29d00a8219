import { createServer, type IncomingMessage, type Server } from 'node:http';
import { AwsError, awsErrorResponse } from './aws-error.ts';
import {
  registerCaCertificate,
  registerCertificate,
  updateCaCertificate,
  updateCertificate,
} from './operations.ts';
import type { CaRecord, CertificateRecord, IotRegistry, ThingRecord } from './registry.ts';
import { type AwsCredentials, verifySigV4 } from './sigv4.ts';

/** The largest request body the control plane reads (a CA and a verification certificate fit). */
export const MAX_BODY_BYTES = 64 * 1024;
const PAGE_SIZE = 250;

interface Call {
  readonly params: string[];
  readonly query: URLSearchParams;
  readonly body: Record<string, unknown>;
}
type Handler = (call: Call) => unknown;

/**
 * The control plane: AWS IoT's REST operations the emulator knows, each SigV4-verified
 * against `credentials`, answering JSON in the shapes the AWS SDK reads.
 */
export function createControlPlane(
  registry: IotRegistry,
  credentials: AwsCredentials,
  mqttEndpoint: () => string,
): Server {
  const epoch = (date: Date) => date.getTime() / 1000;
  const caSummary = (ca: CaRecord) => ({
    certificateArn: ca.arn,
    certificateId: ca.id,
    status: ca.status,
    creationDate: epoch(ca.created),
  });
  const certSummary = (c: CertificateRecord) => ({
    certificateArn: c.arn,
    certificateId: c.id,
    status: c.status,
    certificateMode: 'DEFAULT',
    creationDate: epoch(c.created),
  });
  const thingSummary = (t: ThingRecord) => ({
    thingName: t.name,
    thingArn: t.arn,
    attributes: t.attributes,
    version: t.version,
  });

  const routes: [string, RegExp, Handler][] = [
    ['GET', /^\/registrationcode$/, () => ({ registrationCode: registry.registrationCode })],
    [
      'POST',
      /^\/cacertificate$/,
      ({ query, body }) => {
        const ca = registerCaCertificate(registry, {
          ...body,
          setAsActive: flag(query, 'setAsActive') ?? false,
          allowAutoRegistration: flag(query, 'allowAutoRegistration') ?? false,
        });
        return { certificateArn: ca.arn, certificateId: ca.id };
      },
    ],
    [
      'PUT',
      /^\/cacertificate\/([^/]+)$/,
      ({ params, query, body }) => {
        updateCaCertificate(registry, params[0] as string, {
          newStatus: query.get('newStatus') ?? undefined,
          newAutoRegistrationStatus: query.get('newAutoRegistrationStatus') ?? undefined,
          registrationConfig: body.registrationConfig,
          removeAutoRegistration: body.removeAutoRegistration,
        });
        return {};
      },
    ],
    [
      'GET',
      /^\/cacertificate\/([^/]+)$/,
      ({ params }) => {
        const ca = registry.ca(params[0] as string);
        return {
          certificateDescription: {
            ...caSummary(ca),
            certificatePem: ca.pem,
            ownedBy: registry.account,
            autoRegistrationStatus: ca.autoRegistrationStatus,
            lastModifiedDate: epoch(ca.modified),
            customerVersion: ca.customerVersion,
            generationId: ca.generationId,
            validity: { notBefore: epoch(ca.cert.notBefore), notAfter: epoch(ca.cert.notAfter) },
            certificateMode: ca.mode,
          },
          ...(ca.registrationConfig === undefined ? {} : { registrationConfig: ca.registrationConfig }),
        };
      },
    ],
    [
      'GET',
      /^\/cacertificates$/,
      ({ query }) => page([...registry.cas.values()].map(caSummary), query, 'certificates', 'nextMarker'),
    ],
    [
      'POST',
      /^\/certificate\/register$/,
      ({ query, body }) => {
        const cert = registerCertificate(registry, { ...body, setAsActive: flag(query, 'setAsActive') });
        return { certificateArn: cert.arn, certificateId: cert.id };
      },
    ],
    [
      'PUT',
      /^\/certificates\/([^/]+)$/,
      ({ params, query }) => {
        updateCertificate(registry, params[0] as string, query.get('newStatus') ?? undefined);
        return {};
      },
    ],
    [
      'GET',
      /^\/certificates$/,
      ({ query }) =>
        page([...registry.certificates.values()].map(certSummary), query, 'certificates', 'nextMarker'),
    ],
    [
      'GET',
      /^\/things\/([^/]+)$/,
      ({ params }) => {
        const t = registry.thing(params[0] as string);
        return {
          defaultClientId: t.name,
          thingName: t.name,
          thingId: t.id,
          thingArn: t.arn,
          attributes: t.attributes,
          version: t.version,
        };
      },
    ],
    [
      'GET',
      /^\/things$/,
      ({ query }) => {
        const name = query.get('attributeName');
        const value = query.get('attributeValue');
        const things = [...registry.things.values()].filter(
          (t) =>
            name === null ||
            (t.attributes[name] !== undefined && (value === null || t.attributes[name] === value)),
        );
        return page(things.map(thingSummary), query, 'things', 'nextToken');
      },
    ],
    [
      'GET',
      /^\/things\/([^/]+)\/principals$/,
      ({ params }) => ({ principals: [...registry.thing(params[0] as string).principals] }),
    ],
    [
      'POST',
      /^\/attached-policies\/(.+)$/,
      ({ params }) => {
        const target = params[0] as string;
        const cert = [...registry.certificates.values()].find((c) => c.arn === target);
        if (cert === undefined)
          throw new AwsError(
            'ResourceNotFoundException',
            `target ${target} is not a registered certificate ARN`,
          );
        return {
          policies: [...cert.policies].map((policyName) => ({
            policyName,
            policyArn: `arn:aws:iot:${registry.region}:${registry.account}:policy/${policyName}`,
          })),
        };
      },
    ],
    [
      'GET',
      /^\/endpoint$/,
      ({ query }) => {
        const type = query.get('endpointType') ?? 'iot:Data';
        if (type !== 'iot:Data-ATS' && type !== 'iot:Data') {
          throw new AwsError(
            'InvalidRequestException',
            `endpointType ${type} is not emulated; use iot:Data-ATS`,
          );
        }
        return { endpointAddress: mqttEndpoint() };
      },
    ],
  ];

  return createServer((req, res) => {
    const answer = (status: number, headers: Record<string, string>, body: string) => {
      // An answer before the whole body was read (one over the limit) ends the connection:
      // what is left of the body must not be taken for the next request.
      const close: Record<string, string> = req.readableEnded ? {} : { connection: 'close' };
      res.writeHead(status, { ...headers, ...close, 'x-amzn-RequestId': crypto.randomUUID() });
      res.end(body);
    };
    readBody(req)
      .then((raw) => {
        const target = req.url ?? '/';
        verifySigV4(
          { method: req.method ?? 'GET', target, headers: req.headers, body: raw },
          credentials,
          new Date(),
        );
        const url = new URL(target, 'http://emulator');
        const path = url.pathname;
        for (const [method, pattern, handler] of routes) {
          const m = pattern.exec(path);
          if (m === null || method !== req.method) continue;
          const params = m.slice(1).map((p) => decodePathParameter(p, path));
          const result = handler({ params, query: url.searchParams, body: parseJson(raw) });
          answer(200, { 'content-type': 'application/json' }, JSON.stringify(result));
          return;
        }
        throw new AwsError(
          'InvalidRequestException',
          `${req.method} ${path} is not an AWS IoT operation this emulator knows`,
        );
      })
      .catch((error: unknown) => {
        const failure =
          error instanceof AwsError
            ? error
            : new AwsError('InternalFailureException', `emulator failure: ${(error as Error).message}`);
        const { status, headers, body } = awsErrorResponse(failure);
        answer(status, headers, body);
      });
  });
}

function flag(query: URLSearchParams, name: string): boolean | undefined {
  const value = query.get(name);
  if (value === null) return undefined;
  if (value !== 'true' && value !== 'false')
    throw new AwsError('InvalidRequestException', `${name} must be true or false`);
  return value === 'true';
}

function page(items: unknown[], query: URLSearchParams, key: string, markerKey: 'nextMarker' | 'nextToken') {
  const size = Number(query.get(markerKey === 'nextMarker' ? 'pageSize' : 'maxResults') ?? PAGE_SIZE);
  if (!Number.isInteger(size) || size < 1 || size > PAGE_SIZE) {
    throw new AwsError('InvalidRequestException', `page size must be an integer from 1 to ${PAGE_SIZE}`);
  }
  const from = Number(query.get(markerKey === 'nextMarker' ? 'marker' : 'nextToken') ?? 0);
  if (!Number.isInteger(from) || from < 0)
    throw new AwsError('InvalidRequestException', 'the marker is not one this emulator gave');
  const slice = items.slice(from, from + size);
  return { [key]: slice, ...(from + size < items.length ? { [markerKey]: String(from + size) } : {}) };
}

function decodePathParameter(parameter: string, path: string): string {
  try {
    return decodeURIComponent(parameter);
  } catch {
    throw new AwsError(
      'InvalidRequestException',
      `${path} is not a valid path: ${parameter} holds a malformed percent-escape (UTF-8 as %XX bytes)`,
    );
  }
}

function parseJson(raw: Uint8Array): Record<string, unknown> {
  if (raw.length === 0) return {};
  try {
    const value: unknown = JSON.parse(Buffer.from(raw).toString('utf8'));
    if (typeof value === 'object' && value !== null && !Array.isArray(value))
      return value as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new AwsError('InvalidRequestException', 'the request body is not a JSON object');
}

function readBody(req: IncomingMessage): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      if (size > MAX_BODY_BYTES) return; // refused already: the rest is dropped
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        // Destroying the request here would reset the connection before the 400 is written;
        // the answer closes the connection instead.
        reject(new AwsError('InvalidRequestException', `request body is over ${MAX_BODY_BYTES} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

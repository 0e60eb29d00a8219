import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { AwsError } from './aws-error.ts';

/** The credentials the emulator accepts (one access key, like one IAM user). */
export interface AwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

/** The default test credentials (documented in packages/sim/README.md); override them with flags. */
export const DEFAULT_CREDENTIALS: AwsCredentials = {
  accessKeyId: 'AKIAKEYFERRYSIM00001',
  secretAccessKey: 'keyferry-sim-aws-iot-secret-access-key',
};

/** How far a request's x-amz-date may be from the emulator's clock (AWS allows 15 minutes). */
export const MAX_CLOCK_SKEW_MS = 15 * 60_000;

/** What {@link verifySigV4} needs of an HTTP request. */
export interface SignedRequest {
  readonly method: string;
  /** The request target as sent: path and query, percent-encoded once. */
  readonly target: string;
  /** Header names in lower case; repeated headers joined with ", " (as node:http does). */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: Uint8Array;
}

const AUTH_PATTERN =
  /^AWS4-HMAC-SHA256 Credential=([^/\s,]+)\/(\d{8})\/([^/\s,]+)\/([^/\s,]+)\/aws4_request,\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/;

/**
 * Verifies an AWS Signature Version 4 `Authorization` header against `credentials`: the
 * canonical request (double-encoded path, sorted query, signed headers, SHA-256 of the body),
 * the credential scope and the clock. Throws an {@link AwsError} with AWS's 403 names:
 * MissingAuthenticationTokenException, UnrecognizedClientException, InvalidSignatureException.
 */
export function verifySigV4(request: SignedRequest, credentials: AwsCredentials, now: Date): void {
  const authorization = header(request, 'authorization');
  if (authorization === undefined) {
    throw new AwsError(
      'MissingAuthenticationTokenException',
      'Missing Authentication Token: requests must be signed with AWS Signature Version 4',
    );
  }
  const match = AUTH_PATTERN.exec(authorization);
  if (match === null) {
    throw new AwsError(
      'InvalidSignatureException',
      'Authorization header is not "AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…"',
    );
  }
  const [, accessKeyId, day, region, service, signedHeaderList, signature] = match as unknown as string[];
  if (accessKeyId !== credentials.accessKeyId) {
    throw new AwsError(
      'UnrecognizedClientException',
      'The security token included in the request is invalid: unknown access key id',
    );
  }
  const amzDate = header(request, 'x-amz-date');
  const signedAt = amzDate === undefined ? undefined : parseAmzDate(amzDate);
  if (signedAt === undefined || amzDate?.slice(0, 8) !== day) {
    throw new AwsError(
      'InvalidSignatureException',
      'x-amz-date is missing or does not match the credential scope',
    );
  }
  if (Math.abs(now.getTime() - signedAt.getTime()) > MAX_CLOCK_SKEW_MS) {
    throw new AwsError(
      'InvalidSignatureException',
      'Signature expired: x-amz-date is more than 15 minutes away',
    );
  }
  const signedHeaders = (signedHeaderList as string).split(';');
  if (!signedHeaders.includes('host')) {
    throw new AwsError('InvalidSignatureException', 'the host header must be signed');
  }
  const payloadHash = createHash('sha256').update(request.body).digest('hex');
  const declared = header(request, 'x-amz-content-sha256');
  if (declared !== undefined && declared !== payloadHash) {
    throw new AwsError('InvalidSignatureException', 'x-amz-content-sha256 does not match the request body');
  }
  const canonical = [
    request.method,
    canonicalPath(request.target),
    canonicalQuery(request.target),
    ...signedHeaders.map((name) => `${name}:${canonicalHeaderValue(header(request, name) ?? '')}`),
    '',
    signedHeaders.join(';'),
    payloadHash,
  ].join('\n');
  const scope = `${day}/${region}/${service}/aws4_request`;
  const stringToSign = [
    'AWS4-HMAC-SHA256',
    amzDate,
    scope,
    createHash('sha256').update(canonical).digest('hex'),
  ].join('\n');
  let key: Buffer = hmac(`AWS4${credentials.secretAccessKey}`, day as string);
  for (const part of [region as string, service as string, 'aws4_request']) key = hmac(key, part);
  const expected = createHmac('sha256', key).update(stringToSign).digest();
  if (!timingSafeEqual(expected, Buffer.from(signature as string, 'hex'))) {
    throw new AwsError(
      'InvalidSignatureException',
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.',
    );
  }
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function header(request: SignedRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

function canonicalHeaderValue(value: string): string {
  return value
    .replace(/[\r\n]/g, ' ')
    .replace(/[ \t]+/g, ' ')
    .trim();
}

function parseAmzDate(value: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (m === null) return undefined;
  const date = new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z`);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

/** RFC 3986 encoding as SigV4 wants it (unreserved characters kept, everything else %XX). */
function escapeUri(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

// Non-S3 services sign the path encoded a second time, after removing empty and dot segments.
function canonicalPath(target: string): string {
  const path = target.split('?', 1)[0] ?? '/';
  const segments: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') segments.pop();
    else segments.push(segment);
  }
  const trailing = segments.length > 0 && path.endsWith('/') ? '/' : '';
  return escapeUri(`/${segments.join('/')}${trailing}`).replace(/%2F/g, '/');
}

function canonicalQuery(target: string): string {
  const at = target.indexOf('?');
  if (at < 0) return '';
  const pairs = target
    .slice(at + 1)
    .split('&')
    .filter((part) => part !== '')
    .map((part) => {
      const eq = part.indexOf('=');
      const key = decode(eq < 0 ? part : part.slice(0, eq));
      const value = eq < 0 ? '' : decode(part.slice(eq + 1));
      return [escapeUri(key), escapeUri(value)] as const;
    });
  pairs.sort(([ka, va], [kb, vb]) => (ka < kb ? -1 : ka > kb ? 1 : va < vb ? -1 : va > vb ? 1 : 0));
  return pairs.map(([key, value]) => `${key}=${value}`).join('&');
}

function decode(text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, '%20'));
  } catch {
    throw new AwsError('InvalidSignatureException', 'the query string is not valid percent-encoding');
  }
}

import { connect } from 'node:net';

/**
 * What fioctl v0.42 puts on the wire (its Go client, `client/foundries.go`): Go's net/http
 * writes Host, User-Agent, Content-Length (when there is a body), then the other headers in
 * canonical spelling, then `Accept-Encoding: gzip`. A body, even an empty one, comes with
 * `Content-Type: application/json`; a GET has neither. The request is written byte for byte
 * over a plain socket, so nothing of Node's HTTP client stands in for it.
 */
export interface WireAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export function fioctlRequestBytes(
  host: string,
  method: string,
  path: string,
  token: string,
  body?: string,
): Buffer {
  const lines = [`${method} ${path} HTTP/1.1`, `Host: ${host}`, 'User-Agent: fioctl-v0.42'];
  if (body !== undefined) {
    lines.push(`Content-Length: ${Buffer.byteLength(body)}`, 'Content-Type: application/json');
  }
  lines.push(`Osf-Token: ${token}`, 'Accept-Encoding: gzip', '', '');
  return Buffer.concat([Buffer.from(lines.join('\r\n')), Buffer.from(body ?? '')]);
}

/** Sends one fioctl request to `base` (http://host:port) and reads the whole answer. */
export function fioctlCall(
  base: string,
  method: string,
  path: string,
  token: string,
  body?: string,
): Promise<WireAnswer> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname);
    const chunks: Buffer[] = [];
    socket.on('error', reject);
    socket.on('data', (d) => {
      chunks.push(d);
      const answer = parseAnswer(Buffer.concat(chunks));
      if (answer) {
        socket.destroy();
        resolve(answer);
      }
    });
    socket.write(fioctlRequestBytes(url.host, method, path, token, body));
  });
}

/** A complete HTTP/1.1 answer (Content-Length or chunked), or undefined while more must come. */
function parseAnswer(raw: Buffer): WireAnswer | undefined {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const [statusLine, ...headerLines] = raw.subarray(0, end).toString('latin1').split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  const status = Number(statusLine!.split(' ')[1]);
  const rest = raw.subarray(end + 4);
  if (headers['transfer-encoding'] === 'chunked') {
    const parts: Buffer[] = [];
    let at = 0;
    for (;;) {
      const lineEnd = rest.indexOf('\r\n', at);
      if (lineEnd < 0) return undefined;
      const size = Number.parseInt(rest.subarray(at, lineEnd).toString('latin1'), 16);
      if (size === 0) return { status, headers, body: Buffer.concat(parts).toString('utf8') };
      if (rest.length < lineEnd + 2 + size + 2) return undefined;
      parts.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
  }
  const length = Number(headers['content-length'] ?? 0);
  if (rest.length < length) return undefined;
  return { status, headers, body: rest.subarray(0, length).toString('utf8') };
}

/** fioctl's readResponse: only these are success; anything else is its "HTTP error during …". */
export const FIOCTL_SUCCESS = new Set([200, 201, 202, 204]);

/*
 * Decoders that accept exactly what Go's encoding/json accepts for the field types of
 * fioctl v0.42's structs: `int` takes a JSON number that is an integer (not a string, not
 * 1.5); `string` a JSON string or null; `json.Number` a number or a string holding one.
 * Unknown fields are ignored, as Go does. Each throws naming the field it could not decode.
 */
export function goInt(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw new TypeError(`json: cannot unmarshal ${goKind(value)} into Go struct field ${field} of type int`);
  }
  return value;
}

export function goString(value: unknown, field: string): string {
  if (value === null || value === undefined) return '';
  if (typeof value !== 'string') {
    throw new TypeError(
      `json: cannot unmarshal ${goKind(value)} into Go struct field ${field} of type string`,
    );
  }
  return value;
}

export function goNumber(value: unknown, field: string): string {
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string' && /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/.test(value)) return value;
  throw new TypeError(
    `json: cannot unmarshal ${goKind(value)} into Go struct field ${field} of type json.Number`,
  );
}

export function goSlice<T>(value: unknown, field: string, item: (v: unknown, f: string) => T): T[] {
  if (value === null || value === undefined) return [];
  if (!Array.isArray(value))
    throw new TypeError(`json: cannot unmarshal ${goKind(value)} into Go value of type []… (${field})`);
  return value.map((v, i) => item(v, `${field}[${i}]`));
}

export function goObject(value: unknown, type: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TypeError(`json: cannot unmarshal ${goKind(value)} into Go value of type client.${type}`);
  }
  return value as Record<string, unknown>;
}

function goKind(value: unknown): string {
  if (Array.isArray(value)) return 'array';
  if (value === null) return 'null';
  return typeof value === 'number' ? 'number' : typeof value;
}

import { readFileSync } from 'node:fs';
import { isLoopbackHost } from '@keyferry/core';
import { Agent, request } from 'undici';
import { CliError } from './cli-error.ts';
import type { ResolvedSettings, TlsSettings } from './settings.ts';

export interface Problem {
  code: string;
  detail: string;
  status: number;
  correlationId?: string;
  info?: Record<string, unknown>;
}

/** An answer of the management API that is a refusal (problem+json). */
export class ApiError extends CliError {
  readonly problem: Problem;
  constructor(problem: Problem) {
    super(`${problem.detail} (${problem.code})`);
    this.problem = problem;
  }
}

/** Certificate errors that a --server-ca fixes. */
const TLS_TRUST_ERRORS = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
]);

/** A TLS alert from the server during the handshake (e.g. TLSV13_ALERT_CERTIFICATE_REQUIRED). */
const TLS_ALERT = /^ERR_SSL_.*ALERT/;

/**
 * The server URL, refused before any request unless it is http:// or https://; `from` says
 * where it came from (ResolvedSettings.serverFrom).
 */
function checkServerUrl(server: string, from: string): URL {
  let url: URL | undefined;
  try {
    url = new URL(server);
  } catch {
    url = undefined;
  }
  if (url?.protocol === 'http:' || url?.protocol === 'https:') return url;
  throw new CliError(
    server.includes('://')
      ? `the server URL ${JSON.stringify(server)} must start with http:// or https://: check ${from}`
      : `the server URL ${JSON.stringify(server)} needs http:// or https:// in front (e.g. --server http://${server}): check ${from}`,
    2,
  );
}

/**
 * The warning for an API token about to go over plain HTTP to another machine (not loopback),
 * or undefined. Not a refusal: a lab may do it on purpose.
 */
export function plainHttpWarning(server: URL): string | undefined {
  if (server.protocol !== 'http:' || isLoopbackHost(server.hostname.replace(/^\[(.*)\]$/, '$1'))) {
    return undefined;
  }
  return (
    `WARNING: ${server.origin} is plain HTTP to another machine: the API token crosses the network unencrypted, ` +
    "readable by anyone on the way; use an https:// --server (keyferryd's api.tls)\n"
  );
}

/** The names a certificate is for, from Node's `subjectaltname` ("DNS:a, IP Address:1.2.3.4"). */
function certificateNames(err: { cert?: { subjectaltname?: string } }): string | undefined {
  const names = err.cert?.subjectaltname
    ?.split(', ')
    .map((n) => n.replace(/^[A-Za-z ]+:/, ''))
    .filter((n) => n !== '');
  return names && names.length > 0 ? names.join(', ') : undefined;
}

/** Why a request got no answer, said so that the operator knows what to change. */
function connectionProblem(err: unknown, at: string, server: URL, tls: TlsSettings, from: string): string {
  const e = err as {
    code?: string;
    message?: string;
    host?: string;
    cert?: { subjectaltname?: string };
    cause?: { code?: string };
  };
  const failure = typeof e.cause?.code === 'string' ? (e.cause as typeof e) : e;
  const code = failure.code;
  if (typeof code === 'string' && TLS_TRUST_ERRORS.has(code)) {
    return `cannot verify keyferryd's TLS certificate at ${at} (${code}): pass the CA that signed it with --server-ca FILE (or KEYFERRY_SERVER_CA)`;
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    const names = certificateNames(failure);
    const host = failure.host ?? server.hostname;
    return (
      `keyferryd's TLS certificate at ${at} is for ${names === undefined ? 'other names' : `other names (${names})`}, not ${host} (${code}): ` +
      'use a --server host the certificate names'
    );
  }
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER') {
    return `${at} does not answer TLS (${code}), so it is likely a plain HTTP server: use http:// or check the port`;
  }
  if (code === 'ERR_OSSL_X509_KEY_VALUES_MISMATCH') {
    return `the client key ${tls.clientKey} does not match the certificate ${tls.clientCert} (${code}): pass the --client-key that belongs to --client-cert`;
  }
  if (server.protocol === 'https:' && (code === 'UND_ERR_SOCKET' || (code && TLS_ALERT.test(code)))) {
    if (tls.clientCert === undefined) {
      return (
        `keyferryd at ${at} closed the TLS connection (${code}): it may require a client certificate (mutual TLS); ` +
        'pass --client-cert FILE and --client-key FILE (or KEYFERRY_CLIENT_CERT and KEYFERRY_CLIENT_KEY)'
      );
    }
    if (code !== 'UND_ERR_SOCKET') {
      return `keyferryd at ${at} refused the TLS handshake (${code}): is --client-cert ${tls.clientCert} signed by the CA it trusts for clients (api.tls.clientCa)?`;
    }
  }
  return `cannot reach keyferryd at ${at} (${code ?? failure.message}): is it running? check ${from}`;
}

function readPem(flag: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new CliError(
      `cannot read ${flag} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
}

/** An undici agent for a private CA or a client certificate; undefined keeps the default. */
function tlsAgent(tls: TlsSettings): Agent | undefined {
  if (!tls.serverCa && !tls.clientCert) return undefined;
  return new Agent({
    connect: {
      ...(tls.serverCa ? { ca: readPem('--server-ca', tls.serverCa) } : {}),
      ...(tls.clientCert ? { cert: readPem('--client-cert', tls.clientCert) } : {}),
      ...(tls.clientKey ? { key: readPem('--client-key', tls.clientKey) } : {}),
    },
  });
}

/** Thin JSON client of the management API; the token goes in OSF-TOKEN as fioctl sent it. */
export class ApiClient {
  readonly server: string;
  readonly factory: string | undefined;
  readonly #token: string | undefined;
  readonly #dispatcher: Agent | undefined;
  readonly #tls: TlsSettings;
  /** Where the server URL came from, for the refusals that say what to check. */
  readonly #serverFrom: string;
  /** Whether the plain-HTTP warning was considered: once a run (a run has one client). */
  #warned = false;

  constructor(settings: ResolvedSettings, tls: TlsSettings = {}) {
    this.server = (settings.server ?? '').replace(/\/+$/, '');
    this.#serverFrom = settings.serverFrom;
    this.factory = settings.factory;
    this.#token = settings.token;
    this.#tls = tls;
    this.#dispatcher = tlsAgent(tls);
  }

  /** `/ota/factories/<factory>/<path>`; needs a factory from -f, KEYFERRY_FACTORY or login. */
  factoryPath(path: string): string {
    if (!this.factory) {
      throw new CliError(
        'no factory given: pass -f/--factory NAME, set KEYFERRY_FACTORY, or run keyferry login',
        2,
      );
    }
    return `/ota/factories/${encodeURIComponent(this.factory)}/${path}`;
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    return (await this.callWithHeaders<T>(method, path, body)).body;
  }

  /** Like {@link call}, also returning the answer's status (206: PKI not set up) and headers (paging cursors). */
  async callWithHeaders<T>(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ body: T; status: number; headers: Record<string, string | string[] | undefined> }> {
    if (!this.#token) {
      throw new CliError('no API token: pass -t/--token, set KEYFERRY_TOKEN, or run keyferry login', 2);
    }
    const server = checkServerUrl(this.server, this.#serverFrom);
    if (!this.#warned) {
      this.#warned = true;
      const warning = plainHttpWarning(server);
      if (warning !== undefined) process.stderr.write(warning);
    }
    const headers: Record<string, string> = { 'osf-token': this.#token, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(this.server + path, {
        method: method as 'GET',
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        ...(this.#dispatcher ? { dispatcher: this.#dispatcher } : {}),
      });
    } catch (err) {
      throw new CliError(connectionProblem(err, this.server, server, this.#tls, this.#serverFrom));
    }
    const text = await res.body.text();
    const type = String(res.headers['content-type'] ?? '');
    const foreign = () => this.#notKeyferryd(method, path, res.statusCode, res.headers.location, text);
    if (res.statusCode >= 400) {
      const problem = type.includes('json') ? (parseJson(text) as Problem | undefined) : undefined;
      if (problem?.code && problem.detail) throw new ApiError({ ...problem, status: res.statusCode });
      throw foreign();
    }
    // keyferryd never redirects, and answers JSON or nothing: anything else came from elsewhere
    if (res.statusCode >= 300 || res.statusCode < 200) throw foreign();
    const parsed = text === '' ? undefined : parseJson(text);
    if (parsed === NOT_JSON) throw foreign();
    return {
      body: parsed as T,
      status: res.statusCode,
      headers: res.headers,
    };
  }

  /** An answer keyferryd never gives (a proxy's redirect or error page, another web server). */
  #notKeyferryd(
    method: string,
    path: string,
    status: number,
    location: string | string[] | undefined,
    text: string,
  ): CliError {
    const redirect = status >= 300 && status < 400 && location !== undefined;
    const said = text.replace(/\s+/g, ' ').trim().slice(0, 120);
    return new CliError(
      `${this.server} answered ${status}${redirect ? ` redirecting to ${String(location)}` : ''} to ${method} ${path}` +
        `${status >= 400 && said !== '' ? ` (${JSON.stringify(said)})` : ''}, which is not an answer from keyferryd: ` +
        "check that --server (or KEYFERRY_SERVER) is keyferryd's management API URL",
    );
  }
}

const NOT_JSON = Symbol('not JSON');

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return NOT_JSON;
  }
}

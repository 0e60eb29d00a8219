import { readFileSync } from 'node:fs';
import { Agent, request } from 'undici';
import { CliError } from './cli-error.ts';
import type { Settings, TlsSettings } from './settings.ts';

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

  constructor(settings: Settings, tls: TlsSettings = {}) {
    this.server = (settings.server ?? '').replace(/\/+$/, '');
    this.factory = settings.factory;
    this.#token = settings.token;
    this.#dispatcher = tlsAgent(tls);
  }

  /** `/ota/factories/<factory>/<path>`; needs a factory from -f, KEYFERRY_FACTORY or login. */
  factoryPath(path: string): string {
    if (!this.factory) {
      throw new CliError(
        'no factory given: pass -f/--factory NAME, set KEYFERRY_FACTORY, or run keyferry login',
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
      throw new CliError('no API token: pass -t/--token, set KEYFERRY_TOKEN, or run keyferry login');
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
      const cause =
        (err as { cause?: { code?: string }; code?: string }).cause?.code ?? (err as { code?: string }).code;
      if (typeof cause === 'string' && TLS_TRUST_ERRORS.has(cause)) {
        throw new CliError(
          `cannot verify keyferryd's TLS certificate at ${this.server} (${cause}): pass the CA that signed it with --server-ca FILE (or KEYFERRY_SERVER_CA)`,
        );
      }
      throw new CliError(
        `cannot reach keyferryd at ${this.server} (${cause ?? (err as Error).message}): is it running? check --server or KEYFERRY_SERVER`,
      );
    }
    const text = await res.body.text();
    const type = String(res.headers['content-type'] ?? '');
    if (res.statusCode >= 400) {
      if (type.includes('json')) {
        const problem = JSON.parse(text) as Problem;
        if (problem.code && problem.detail) throw new ApiError({ ...problem, status: res.statusCode });
      }
      throw new CliError(`keyferryd answered ${res.statusCode} to ${method} ${path}: ${text.slice(0, 200)}`);
    }
    return {
      body: (text === '' ? undefined : JSON.parse(text)) as T,
      status: res.statusCode,
      headers: res.headers,
    };
  }
}

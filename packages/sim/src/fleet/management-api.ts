/** The few management API calls `keyferry-sim fleet` makes, with fetch, as the CLI makes them. */

/** Most ids the service takes in one allow-list request is 10000; the fleet sends 1000 at a time. */
export const ALLOWLIST_BATCH = 1000;

export interface AllowListResult {
  readonly id: string;
  readonly status: string;
  readonly reason?: string;
  readonly group?: string;
}

/** How long a call keeps retrying while the service is down or answers 5xx/429 (a restart). */
export const RETRY_FOR_MS = 120_000;

/**
 * Every call the fleet makes is idempotent (reads, and an allow-list add that answers
 * `already-present` the second time), so a transient failure — no connection, 5xx, 429 — is
 * retried until `retryForMs` has passed: one keyferryd restart must not leave the fleet unprovisioned.
 */
export class ManagementApi {
  readonly #server: string;
  readonly #factory: string;
  readonly #token: string;
  readonly #retryForMs: number;
  readonly #retryDelayMs: number;

  constructor(options: {
    server: string;
    factory: string;
    token: string;
    retryForMs?: number;
    /** First pause between attempts; it doubles up to 10 s, or is the answer's Retry-After. */
    retryDelayMs?: number;
  }) {
    // Checked here: fetch fails a malformed URL as it fails an unreachable one, which is retried.
    if (!URL.canParse(options.server) || !/^https?:$/.test(new URL(options.server).protocol)) {
      throw new Error(
        `--server ${options.server} is not a URL; pass the management API as http(s)://HOST:PORT`,
      );
    }
    this.#server = options.server.replace(/\/+$/, '');
    this.#factory = options.factory;
    this.#token = options.token;
    this.#retryForMs = options.retryForMs ?? RETRY_FOR_MS;
    this.#retryDelayMs = options.retryDelayMs ?? 250;
  }

  /** One call, transient failures retried; an answer that `fits` does not take is refused. */
  async #call<T>(
    method: string,
    path: string,
    fits: (answer: unknown) => boolean,
    body?: unknown,
  ): Promise<T> {
    const deadline = Date.now() + this.#retryForMs;
    for (let delay = this.#retryDelayMs; ; delay = Math.min(delay * 2, 10_000)) {
      let answer: unknown;
      try {
        answer = await this.#callOnce(method, path, body);
      } catch (error) {
        if (!(error instanceof TransientError)) throw error;
        const wait = error.retryAfterMs ?? delay;
        if (Date.now() + wait > deadline) throw new Error(error.message);
        await new Promise((resolve) => setTimeout(resolve, wait));
        continue;
      }
      if (fits(answer)) return answer as T;
      throw new Error(
        `${method} ${this.#server}${path} answered JSON of another shape; is --server the keyferry management API?`,
      );
    }
  }

  async #callOnce(method: string, path: string, body?: unknown): Promise<unknown> {
    const url = `${this.#server}${path}`;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: {
          'osf-token': this.#token,
          accept: 'application/json',
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (error) {
      const why =
        error instanceof Error ? ((error.cause as Error | undefined)?.message ?? error.message) : error;
      throw new TransientError(
        `cannot reach the service at ${this.#server} (${String(why)}); check --server`,
      );
    }
    let text: string;
    try {
      text = await res.text();
    } catch (error) {
      throw new TransientError(`${method} ${path}: the answer broke off (${String(error)})`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (res.ok && json === undefined) {
      throw new Error(`${method} ${url} did not answer JSON; is --server the keyferry management API?`);
    }
    if (!res.ok) {
      const problem = json as Problem | undefined;
      const detail = problem?.detail
        ? `${problem.detail} (${problem.code ?? res.status})`
        : `HTTP ${res.status}`;
      if (res.status >= 500 || res.status === 429) {
        const after = Number(res.headers.get('retry-after'));
        throw new TransientError(
          `${method} ${path}: ${detail}`,
          Number.isFinite(after) && after > 0 ? Math.min(after, 10) * 1000 : undefined,
        );
      }
      throw new ProblemError(`${method} ${path}: ${detail}`, problem);
    }
    return json;
  }

  #factoryPath(path: string): string {
    return `/ota/factories/${encodeURIComponent(this.#factory)}/${path}`;
  }

  /** The factory's repo id (REPOID of the agent), as `keyferry factories` lists it. */
  async repoId(): Promise<string> {
    const rows = await this.#call<{ name: string; 'repo-id': string }[]>(
      'GET',
      '/ota/factories/',
      (v) =>
        Array.isArray(v) &&
        v.every((r) => isObject(r) && typeof r.name === 'string' && typeof r['repo-id'] === 'string'),
    );
    const row = rows.find((r) => r.name === this.#factory);
    if (row === undefined) {
      throw new Error(
        `the token cannot see factory ${this.#factory}; check -f/--factory (it sees: ${rows.map((r) => r.name).join(', ') || 'none'})`,
      );
    }
    return row['repo-id'];
  }

  /** The device-link subdomain (EL2GO_HOSTNAME), as `keyferry el2g status` prints it. */
  async subdomain(): Promise<string> {
    const overview = await this.#call<{ subdomain: string }>(
      'GET',
      this.#factoryPath('el2g/overview/'),
      (v) => isObject(v) && typeof v.subdomain === 'string',
    );
    return overview.subdomain;
  }

  /** The factory root certificate (ROOT_CRT of the agent), if uploaded. */
  async rootCertificate(): Promise<string | undefined> {
    const certs = await this.#call<{ 'root-crt'?: string }>(
      'GET',
      this.#factoryPath('certs/'),
      (v) => isObject(v) && (v['root-crt'] === undefined || typeof v['root-crt'] === 'string'),
    );
    return certs['root-crt'] || undefined;
  }

  /** `el2g devices add <12nc> <ids…>` (not production): one result per id, in order. */
  async allowList(product: string, ids: readonly string[]): Promise<AllowListResult[]> {
    const body = { 'product-id': product, devices: ids, production: false };
    try {
      const added = await this.#call<{ results: AllowListResult[] }>(
        'POST',
        this.#factoryPath('el2g/devices/'),
        (v) => isObject(v) && Array.isArray(v.results),
        body,
      );
      return added.results;
    } catch (error) {
      // no device added: the refusal carries the same per-device answer
      const results = error instanceof ProblemError ? error.problem?.info?.results : undefined;
      if (Array.isArray(results)) return results as AllowListResult[];
      throw error;
    }
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

interface Problem {
  detail?: string;
  code?: string;
  info?: { results?: unknown };
}

/** A refusal of the management API, with its problem body. */
class ProblemError extends Error {
  readonly problem: Problem | undefined;
  constructor(message: string, problem: Problem | undefined) {
    super(message);
    this.problem = problem;
  }
}

/** No connection, a 5xx or a 429: worth another attempt. */
class TransientError extends Error {
  readonly retryAfterMs: number | undefined;
  constructor(message: string, retryAfterMs?: number) {
    super(message);
    this.retryAfterMs = retryAfterMs;
  }
}

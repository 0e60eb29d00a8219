/**
 * The one HTTP client every bench case uses: node:http(s) `request` on a keep-alive agent, the
 * answer read whole. keyferry's device-link (TLS) and cfssl (plain HTTP) get the same code.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Agent as HttpAgent } from 'node:http';
import { request as httpRequest } from 'node:http';
import {
  type AgentOptions,
  Agent as HttpsAgent,
  request as httpsRequest,
  type RequestOptions,
} from 'node:https';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';

export interface Call {
  agent: HttpAgent | HttpsAgent;
  tls: boolean;
  method: string;
  path: string;
  headers?: Record<string, string>;
  /** SNI, for the device-link's factory host name. */
  servername?: string;
  body?: string;
}

/** One answer, whatever its status: status, headers and the whole body as text. */
export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** Sends one request; resolves with the answer, whatever its status. */
export function exchange(call: Call): Promise<Answer> {
  const request = call.tls ? httpsRequest : httpRequest;
  return new Promise<Answer>((resolve, reject) => {
    const req = request(
      {
        agent: call.agent,
        method: call.method,
        path: call.path,
        headers: call.headers ?? {},
        ...(call.servername ? { servername: call.servername } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(call.body);
  });
}

/** Sends one request; resolves with the body of a 200 answer, rejects naming anything else. */
export async function send(call: Call): Promise<string> {
  const { status, text } = await exchange(call);
  if (status !== 200)
    throw new Error(`${call.method} ${call.path} answered ${status}: ${text.slice(0, 200)}`);
  return text;
}

/**
 * An HTTPS agent that accepts one server certificate only, the DER compared byte for byte on
 * each connection before its request goes out. When Node's TLS client verifies a server it
 * builds the certificate's whole object form on every handshake (getPeerCertificate(true),
 * three fingerprints and every field) just to check its host name: about 0.5 ms of the load
 * generator's CPU per device here, on the same cores as the server being measured. The
 * certificate itself is checked once (pinnedServerCertificate), as a device checks it.
 */
export class PinnedAgent extends HttpsAgent {
  readonly #pin: Buffer;

  constructor(options: AgentOptions, pin: Buffer) {
    super({ ...options, rejectUnauthorized: false });
    this.#pin = pin;
  }

  override createConnection(
    options: RequestOptions,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    const socket = super.createConnection(options, callback) as TLSSocket;
    socket.prependOnceListener('secureConnect', () => {
      const served = socket.getPeerX509Certificate();
      if (!served?.raw.equals(this.#pin))
        socket.destroy(
          new Error(
            `the server presented ${served ? `the certificate of ${served.subject.replaceAll('\n', ', ')}` : 'no certificate'}, not the one this run checked at its start`,
          ),
        );
    });
    return socket;
  }
}

/**
 * The certificate (first of the PEM file `certFile`) a PinnedAgent then expects, checked the way
 * a device checks its server: issued and signed by `caPem`, valid now, for `host`.
 */
export function pinnedServerCertificate(certFile: string, caPem: string, host: string): Buffer {
  const cert = new X509Certificate(readFileSync(certFile));
  const ca = new X509Certificate(caPem);
  const now = Date.now();
  const problem =
    !cert.checkIssued(ca) || !cert.verify(ca.publicKey)
      ? `is not signed by the CA ${ca.subject}`
      : now < Date.parse(cert.validFrom) || now > Date.parse(cert.validTo)
        ? `is not valid now (${cert.validFrom} to ${cert.validTo})`
        : cert.checkHost(host) === undefined
          ? `is not for ${host}`
          : undefined;
  if (problem) throw new Error(`${certFile} ${problem}`);
  return cert.raw;
}

export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
}

export function percentiles(ms: readonly number[]): Percentiles {
  const s = [...ms].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] ?? Number.NaN;
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99) };
}

/** The middle value (of an even count, the mean of the two middle ones). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Failures by message (first 120 characters), so a report shows each cause once with its count. */
export class Failures {
  readonly #byReason = new Map<string, number>();
  count = 0;

  add(error: unknown): void {
    this.count++;
    const reason = (error instanceof Error ? error.message : String(error)).slice(0, 120);
    this.#byReason.set(reason, (this.#byReason.get(reason) ?? 0) + 1);
  }

  /** Counts `other`'s failures too, each reason prefixed with `prefix`. */
  addAll(other: Failures, prefix: string): void {
    this.count += other.count;
    for (const [reason, n] of other.#byReason)
      this.#byReason.set(prefix + reason, (this.#byReason.get(prefix + reason) ?? 0) + n);
  }

  lines(): string[] {
    return [...this.#byReason].map(([reason, n]) => `  ${n} × ${reason}`);
  }
}

/**
 * Runs `one(i)` for i in [0, n) with `concurrency` in flight; a failure is counted, not thrown.
 * `progress` is called about every 2 s with how many are done.
 */
export async function runPool(
  n: number,
  concurrency: number,
  one: (i: number) => Promise<void>,
  failures: Failures,
  progress?: (done: number) => void,
): Promise<void> {
  let next = 0;
  let done = 0;
  const timer = progress ? setInterval(() => progress(done), 2000) : undefined;
  const worker = async () => {
    for (let i = next++; i < n; i = next++) {
      try {
        await one(i);
      } catch (error) {
        failures.add(error);
      }
      done++;
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  } finally {
    if (timer) clearInterval(timer);
  }
}

import { Agent, request } from 'node:https';
import { decodeCertsOnly, toPem } from '@keyferry/core';
import { AgentError } from '../agent-error.ts';
import type { SeIdentity } from '../se/port.ts';
import type { HostPort } from '../settings/settings.ts';
import { type Manifest, parseManifest } from './manifest.ts';
import { parseProblem, problemError, retryAfterSeconds } from './problem.ts';

/** Largest answer read from the service: manifests and certs-only chains are a few KiB. */
export const MAX_RESPONSE_BYTES = 1 << 20;
const REQUEST_TIMEOUT_MS = 30_000;

export interface DeviceLinkClientOptions {
  /** `<sub>.device-link.<domain>`: SNI, Host header and the name the server certificate must carry. */
  readonly hostname: string;
  /** Where to dial (EL2GO_CONNECT_ADDR, else the hostname on 443). */
  readonly connect: HostPort;
  /** PEM of the CAs that verify the server (DEVICE_LINK_CA); the system's when undefined. */
  readonly ca: string | undefined;
  readonly identity: SeIdentity;
}

/** Result of an EST enrollment: the issued certificate first, as the service sent them (DER). */
export type CertsOnly = Uint8Array[];

/** One result line of a report. */
export interface ReportResult {
  readonly name: string;
  readonly status: 'SUCCESS' | 'FAILED';
  readonly detail?: string;
}

// TLS errors that mean "this is not the server DEVICE_LINK_CA vouches for".
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * The device side of the device-link protocol (docs/device-link.md): mutual TLS with the SE's
 * vendor identity, one kept-alive connection for the whole run, JSON manifest and report,
 * EST enrollment. Every failure is an AgentError whose kind decides retry and exit code.
 */
export class DeviceLinkClient {
  private readonly agent: Agent;

  constructor(private readonly options: DeviceLinkClientOptions) {
    this.agent = new Agent({
      keepAlive: true,
      maxSockets: 1,
      minVersion: 'TLSv1.2',
      servername: options.hostname,
      ...(options.ca === undefined ? {} : { ca: options.ca }),
      cert: options.identity.certificateChain.map((der) => toPem(der, 'CERTIFICATE')).join(''),
      ...options.identity.tls,
    });
  }

  /** `host:port (SNI name)`, for log lines. */
  get where(): string {
    const { connect, hostname } = this.options;
    return connect.host === hostname
      ? `${hostname}:${connect.port}`
      : `${connect.host}:${connect.port} (${hostname})`;
  }

  async manifest(): Promise<Manifest> {
    const body = await this.call('GET', '/device-link/v1/manifest', 'fetching the manifest', {
      accept: 'application/json',
    });
    return parseManifest(body, this.where);
  }

  /** The CA chain of a certificate object (EST cacerts). */
  async caCerts(label: string): Promise<CertsOnly> {
    const body = await this.call(
      'GET',
      `/.well-known/est/${encodeURIComponent(label)}/cacerts`,
      `cacerts for ${label}`,
      {
        accept: 'application/pkcs7-mime',
      },
    );
    return this.certsOnly(body, `cacerts for ${label}`);
  }

  /** EST simpleenroll: a DER CSR in, the issued certificate (and any chain) out. */
  async simpleEnroll(label: string, csr: Uint8Array, reenroll = false): Promise<CertsOnly> {
    const op = reenroll ? 'simplereenroll' : 'simpleenroll';
    const body = await this.call(
      'POST',
      `/.well-known/est/${encodeURIComponent(label)}/${op}`,
      `enrolling ${label}`,
      {
        accept: 'application/pkcs7-mime',
        'content-type': 'application/pkcs10',
        'content-transfer-encoding': 'base64',
      },
      Buffer.from(Buffer.from(csr).toString('base64'), 'ascii'),
    );
    return this.certsOnly(body, `enrolling ${label}`);
  }

  async report(results: readonly ReportResult[]): Promise<void> {
    await this.call(
      'POST',
      '/device-link/v1/report',
      'sending the report',
      { accept: 'application/json', 'content-type': 'application/json' },
      Buffer.from(JSON.stringify({ results })),
    );
  }

  close(): void {
    this.agent.destroy();
  }

  private certsOnly(body: Buffer, what: string): CertsOnly {
    const text = body.toString('ascii').replace(/\s+/g, '');
    try {
      const certs = decodeCertsOnly(Buffer.from(text, 'base64'));
      if (certs.length === 0) throw new Error('it holds no certificate');
      return certs;
    } catch (error) {
      throw new AgentError(
        'refused',
        `${what}: the answer from ${this.where} is not a PKCS#7 certs-only message (${(error as Error).message})`,
      );
    }
  }

  private call(
    method: 'GET' | 'POST',
    path: string,
    what: string,
    headers: Record<string, string>,
    body?: Buffer,
  ): Promise<Buffer> {
    const { connect, hostname } = this.options;
    return new Promise<Buffer>((resolve, reject) => {
      const req = request(
        {
          agent: this.agent,
          host: connect.host,
          port: connect.port,
          servername: hostname,
          method,
          path,
          headers: { host: hostname, ...headers, ...(body ? { 'content-length': String(body.length) } : {}) },
          timeout: REQUEST_TIMEOUT_MS,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_RESPONSE_BYTES) {
              req.destroy(
                new AgentError(
                  'refused',
                  `${what}: the answer from ${this.where} is over ${MAX_RESPONSE_BYTES} bytes`,
                ),
              );
            } else chunks.push(chunk);
          });
          res.on('error', (error) => reject(this.networkError(error, what)));
          res.on('end', () => {
            const data = Buffer.concat(chunks);
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300 && status !== 202) return resolve(data);
            const retryAfter = retryAfterSeconds(res.headers['retry-after']);
            if (status === 202) {
              return reject(
                new AgentError(
                  'transient',
                  `${what}: ${this.where} says the request is pending (202)`,
                  retryAfter === undefined ? {} : { retryAfter },
                ),
              );
            }
            if (status >= 300 && status < 400) {
              // a proxy or web server in front: keyferryd's device-link never redirects
              const location = res.headers.location;
              return reject(
                new AgentError(
                  'refused',
                  `${what}: ${this.where} answered a redirect (HTTP ${status}${location ? `, to ${location}` : ''}); ` +
                    "the device-link never redirects: EL2GO_HOSTNAME (or EL2GO_CONNECT_ADDR) must reach keyferryd's device-link itself",
                ),
              );
            }
            const problem = parseProblem(status, res.headers['content-type'], data);
            reject(problemError(`${what}: ${this.where} refused`, problem, retryAfter));
          });
        },
      );
      req.on('timeout', () =>
        req.destroy(Object.assign(new Error('no answer within 30 s'), { code: 'ETIMEDOUT' })),
      );
      req.on('error', (error) => reject(this.networkError(error, what)));
      req.end(body);
    });
  }

  private networkError(error: unknown, what: string): AgentError {
    if (error instanceof AgentError) return error;
    const code = (error as NodeJS.ErrnoException).code ?? '';
    const message = (error as Error).message;
    if (UNTRUSTED.has(code)) {
      return new AgentError(
        'server_untrusted',
        `the device-link server ${this.where} is not trusted: ${message} (${code}); ` +
          'check EL2GO_HOSTNAME and that DEVICE_LINK_CA names the CA that signed its certificate',
        { cause: error },
      );
    }
    if (
      /alert (bad certificate|certificate required|unknown ca|certificate unknown|handshake failure)/i.test(
        message,
      )
    ) {
      return new AgentError(
        'refused',
        `the device-link server ${this.where} refused the secure element's identity during the TLS handshake: ${message}`,
        { cause: error },
      );
    }
    return new AgentError('transient', `${what}: cannot reach ${this.where}: ${message}`, { cause: error });
  }
}

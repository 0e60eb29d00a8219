import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { encodeCertsOnly, KeyferryError } from '@keyferry/core';
import type { Logger } from 'pino';
import { recordCountedAudit } from '../audit/audit-log.ts';
import type { Factory } from '../factories/factories.ts';
import { clientWentAway } from '../http/client-errors.ts';
import { toKeyferryError } from '../http/problem.ts';
import type { TokenBuckets } from '../http/rate-limit.ts';
import { parseBody } from '../http/validate.ts';
import type { KeyCustody } from '../keys/custody.ts';
import { observeRequest } from '../metrics/observe-request.ts';
import type { ServiceMetrics } from '../metrics/service-metrics.ts';
import type { CrlRefresher } from '../revocation/refresh.ts';
import type { Db } from '../storage/database.ts';
import { DatabaseRefusalError } from '../storage/storage-full.ts';
import { assertRenewalScope } from './device-certificate.ts';
import { checkCsrHeaders, decodeCsrBody } from './est-body.ts';
import { factoryForConnection } from './factory-host.ts';
import {
  CORRELATION_HEADER,
  discardRest,
  readBody,
  sendBase64,
  sendCertsOnly,
  sendJson,
  sendProblem,
} from './http-io.ts';
import { peerCertificate } from './identity.ts';
import { type EnrollMode, enrollDevice } from './issuance.ts';
import type { IssuingCas } from './issuing-cas.ts';
import { deviceManifest } from './manifest.ts';
import { CSR_ATTRIBUTES, DEFAULT_EST_LABEL, factoryCertificateObject } from './public-est.ts';
import { firstValidity } from './renewal-policy.ts';
import { recordReport, reportSchema } from './report.ts';
import { authenticateDevice, type CallerTrace, type DeviceSession } from './session.ts';
import type { TrustAnchors } from './trust-anchors.ts';

export interface DeviceLinkDeps {
  db: Db;
  domain: string;
  anchors: TrustAnchors;
  issuingCas: IssuingCas;
  custody: KeyCustody;
  /** Re-signs CRLs after a rekey or a rotation revokes a certificate. */
  crlRefresher: CrlRefresher;
  log: Logger;
  metrics?: ServiceMetrics | undefined;
  /** deviceLink.rateLimits; none in tests that build the handler alone. */
  rateLimits?: { perIdentity: TokenBuckets; perAddress: TokenBuckets } | undefined;
}

/**
 * Takes a token per client address and, when the client shows a certificate, per vendor
 * identity (its SHA-256 fingerprint, which Node computes during the handshake): before any
 * database work, so a flood costs the service no more than the refusal.
 */
function admit(deps: DeviceLinkDeps, socket: TLSSocket): void {
  if (!deps.rateLimits) return;
  deps.rateLimits.perAddress.admit(socket.remoteAddress ?? '', 'deviceLink.rateLimits.perAddress');
  const fingerprint = peerFingerprint(socket);
  if (fingerprint) deps.rateLimits.perIdentity.admit(fingerprint, 'deviceLink.rateLimits.perIdentity');
}

/** The client certificate's fingerprint, from the connection's certificate read once. */
function peerFingerprint(socket: TLSSocket): string | undefined {
  return peerCertificate(socket)?.x509.fingerprint256;
}

/** A call by an authenticated, allow-listed device. */
type DeviceHandler = (
  deps: DeviceLinkDeps,
  session: DeviceSession,
  req: IncomingMessage,
  res: ServerResponse,
  correlationId: string,
  label: string,
) => Promise<void>;

/** A call any EST client may make, client certificate or not: it names only the factory. */
type PublicHandler = (
  deps: DeviceLinkDeps,
  factory: Factory,
  res: ServerResponse,
  label: string,
) => Promise<void>;

/** `operation` names the call to a device certificate that may only renew (device-certificate.ts). */
type Route = { method: string; label: string; operation: string } & (
  | { device: DeviceHandler; public?: never }
  | { public: PublicHandler; device?: never }
);

/** RFC 7030 §3.2.2: `/.well-known/est[/<label>]/<operation>`; without a label, the default object. */
const EST =
  /^\/\.well-known\/est(?:\/([A-Za-z0-9._-]{1,128}))?\/(cacerts|csrattrs|simpleenroll|simplereenroll)$/;

/** Picks the handler of a path (docs/device-link.md); undefined for a path the device-link does not have. */
function route(path: string): Route | undefined {
  if (path === '/device-link/v1/manifest')
    return { device: manifest, label: '', method: 'GET', operation: path };
  if (path === '/device-link/v1/report')
    return { device: report, label: '', method: 'POST', operation: path };
  const est = EST.exec(path);
  if (!est) return undefined;
  const [, label = DEFAULT_EST_LABEL, op] = est;
  if (op === 'cacerts') return { public: cacerts, label, method: 'GET', operation: op };
  if (op === 'csrattrs') return { public: csrattrs, label, method: 'GET', operation: op };
  return {
    device: (d, s, q, r, c, l) => enroll(d, s, q, r, c, l, op as EnrollMode),
    label,
    method: 'POST',
    operation: op!,
  };
}

/** A path as metrics label it: the EST label folded, so labels stay few. */
function routeTemplate(path: string): string {
  const est = EST.exec(path);
  if (est) return `/.well-known/est/{label}/${est[2]}`;
  return route(path) ? path : 'unmatched';
}

/** The device-link request handler: correlation id, routing, device authentication, problems. */
export function deviceLinkHandler(deps: DeviceLinkDeps) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const correlationId = randomUUID();
    res.setHeader(CORRELATION_HEADER, correlationId);
    const trace: CallerTrace = { claim: {} };
    const path = (req.url ?? '/').split('?')[0]!;
    if (deps.metrics) observeRequest(deps.metrics, 'device-link', req, res, routeTemplate(path));
    void (async () => {
      admit(deps, req.socket as TLSSocket);
      const found = route(path);
      if (!found)
        throw new KeyferryError('not_found', `no device-link endpoint ${path}; see docs/device-link.md`);
      if (req.method !== found.method) {
        throw new KeyferryError('method_not_allowed', `${path} takes ${found.method}, not ${req.method}`, {
          detail: { allow: found.method },
        });
      }
      if (found.public) {
        trace.factory = await factoryForConnection(deps.db, req.socket as TLSSocket, deps.domain);
        return await found.public(deps, trace.factory, res, found.label);
      }
      const session = await authenticateDevice(
        deps.db,
        req.socket as TLSSocket,
        deps.domain,
        deps.anchors,
        trace,
      );
      if (session.renewal) assertRenewalScope(session.renewal, found.operation, found.label);
      await found.device(deps, session, req, res, correlationId, found.label);
    })().catch(async (err: unknown) => {
      // any client can hang up mid-request: that fills neither the log nor the audit
      if (clientWentAway(err, req)) {
        deps.log.debug(
          { correlationId, path, code: (err as NodeJS.ErrnoException).code },
          'client went away',
        );
        return void res.destroy();
      }
      const error = toKeyferryError(err, deps.log);
      deps.metrics?.refused('device-link', error.code);
      if (error.expose)
        deps.log.info({ correlationId, code: error.code, msg: error.message, path }, 'device-link refused');
      else deps.log.error({ correlationId, err, path }, 'device-link request failed');
      // a full disk has no room for the refusal's audit row either, a database that is not
      // there none at all, and a busy one would make it wait again (the cause is logged once a
      // burst)
      if (!(error instanceof DatabaseRefusalError))
        await auditRefusal(deps.db, trace, error, path, correlationId, req.socket as TLSSocket).catch(
          (e: unknown) => deps.log.error({ correlationId, err: e }, 'cannot write the audit log'),
        );
      if (res.headersSent) return void res.destroy();
      if (error.code === 'body_too_large') discardRest(req, res);
      sendProblem(res, error, correlationId);
    });
  };
}

/**
 * One counted audit row per caller, reason, route and minute (recordCountedAudit): any client
 * can be refused in a loop, and one row per refusal let one client add gigabytes a day. The
 * caller is the device whose identity verified; before that, what a certificate claims costs
 * nothing to vary (a fresh self-signed one per request), so the caller is its address. The
 * route is the path's template (an EST label folded, any unknown path `unmatched`): a path,
 * too, costs nothing to vary; the first one refused is kept in the row's detail, cut short.
 */
async function auditRefusal(
  db: Db,
  trace: CallerTrace,
  error: KeyferryError,
  path: string,
  correlationId: string,
  socket: TLSSocket,
) {
  const actor = `device:${trace.claim.deviceId ?? 'unknown'}`;
  const caller = trace.verified ? actor : `address:${socket.remoteAddress ?? ''}`;
  const factoryId = trace.factory?.id ?? null;
  const template = routeTemplate(path);
  await recordCountedAudit(
    db,
    {
      factoryId,
      actor,
      action: 'device-link.refused',
      object: `path:${template}`,
      detail: {
        code: error.code,
        reason: cut(error.expose ? error.message : 'internal error'),
        path: cut(path),
        product: trace.claim.nc12 ?? null,
      },
      correlationId,
    },
    JSON.stringify([factoryId, caller, error.code, template]),
  );
}

/** Text an audit row keeps of what a client sent: at most AUDIT_TEXT_CHARS characters. */
function cut(text: string): string {
  return text.length <= AUDIT_TEXT_CHARS ? text : `${text.slice(0, AUDIT_TEXT_CHARS)}…`;
}
const AUDIT_TEXT_CHARS = 512;

const manifest: DeviceHandler = async (deps, session, _req, res, correlationId) => {
  sendJson(res, 200, await deviceManifest(deps.db, session, { correlationId }));
};

const cacerts: PublicHandler = async (deps, factory, res, label) => {
  const object = await factoryCertificateObject(deps.db, factory, label);
  if (object.caId === null)
    throw new KeyferryError('internal', `certificate object ${object.name} has no CA`);
  const ca = await deps.issuingCas.get(factory, object.caId, firstValidity(object));
  sendCertsOnly(res, encodeCertsOnly(ca.root ? [ca.certificate, ca.root] : [ca.certificate]));
};

const csrattrs: PublicHandler = async (deps, factory, res, label) => {
  await factoryCertificateObject(deps.db, factory, label);
  sendBase64(res, CSR_ATTRIBUTES, 'application/csrattrs');
};

async function enroll(
  deps: DeviceLinkDeps,
  session: DeviceSession,
  req: IncomingMessage,
  res: ServerResponse,
  correlationId: string,
  label: string,
  mode: EnrollMode,
): Promise<void> {
  // Read first, judge inside the issuance: a refused body then also marks the object failed.
  const body = await readBody(req).catch((e: unknown) => e as Error);
  // a client that hung up has nothing to judge: its object is not marked failed
  if (body instanceof Error && clientWentAway(body, req)) throw body;
  const csr = () => {
    if (body instanceof Error) throw body;
    checkCsrHeaders(req.headers);
    return decodeCsrBody(body);
  };
  const { certificate } = await enrollDevice(deps, session, label, csr, mode, { correlationId });
  deps.metrics?.enrolled(label);
  sendCertsOnly(res, encodeCertsOnly([certificate]));
}

const report: DeviceHandler = async (deps, session, req, res, correlationId) => {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new KeyferryError('unsupported_media_type', 'send the report as application/json');
  }
  const text = (await readBody(req)).toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new KeyferryError('invalid_json', 'the report is not valid JSON');
  }
  const body = parseBody(reportSchema, json, 'report');
  sendJson(res, 200, await recordReport(deps, session, body, { correlationId }));
};

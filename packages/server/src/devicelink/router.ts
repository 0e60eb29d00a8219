import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { encodeCertsOnly, isKeyferryError, KeyferryError } from '@keyferry/core';
import type { Logger } from 'pino';
import { recordAudit } from '../audit/audit-log.ts';
import { parseBody } from '../http/validate.ts';
import type { KeyCustody } from '../keys/custody.ts';
import type { Db } from '../storage/database.ts';
import { deviceLinkObjects } from './device-records.ts';
import { checkCsrHeaders, decodeCsrBody } from './est-body.ts';
import {
  CORRELATION_HEADER,
  discardRest,
  readBody,
  sendCertsOnly,
  sendJson,
  sendProblem,
} from './http-io.ts';
import { certificateObject, type EnrollMode, enrollDevice } from './issuance.ts';
import type { IssuingCas } from './issuing-cas.ts';
import { deviceManifest } from './manifest.ts';
import { recordReport, reportSchema } from './report.ts';
import { authenticateDevice, type CallerTrace, type DeviceSession } from './session.ts';
import type { TrustAnchors } from './trust-anchors.ts';

export interface DeviceLinkDeps {
  db: Db;
  domain: string;
  anchors: TrustAnchors;
  issuingCas: IssuingCas;
  /** Re-signs CRLs after a rotation revokes a certificate. */
  custody: KeyCustody;
  log: Logger;
}

type Handler = (
  deps: DeviceLinkDeps,
  session: DeviceSession,
  req: IncomingMessage,
  res: ServerResponse,
  correlationId: string,
  label: string,
) => Promise<void>;

const EST = /^\/\.well-known\/est\/([A-Za-z0-9._-]{1,128})\/(cacerts|simpleenroll|simplereenroll)$/;

/** Picks the handler of a path (docs/device-link.md); undefined for a path the device-link does not have. */
function route(path: string): { handler: Handler; label: string; method: string } | undefined {
  if (path === '/device-link/v1/manifest') return { handler: manifest, label: '', method: 'GET' };
  if (path === '/device-link/v1/report') return { handler: report, label: '', method: 'POST' };
  const est = EST.exec(path);
  if (!est) return undefined;
  const [, label = '', op] = est;
  if (op === 'cacerts') return { handler: cacerts, label, method: 'GET' };
  return { handler: (d, s, q, r, c, l) => enroll(d, s, q, r, c, l, op as EnrollMode), label, method: 'POST' };
}

/** The device-link request handler: correlation id, routing, device authentication, problems. */
export function deviceLinkHandler(deps: DeviceLinkDeps) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const correlationId = randomUUID();
    res.setHeader(CORRELATION_HEADER, correlationId);
    const trace: CallerTrace = { claim: {} };
    const path = (req.url ?? '/').split('?')[0]!;
    void (async () => {
      const found = route(path);
      if (!found)
        throw new KeyferryError('not_found', `no device-link endpoint ${path}; see docs/device-link.md`);
      if (req.method !== found.method) {
        throw new KeyferryError('not_found', `${path} takes ${found.method}, not ${req.method}`);
      }
      const session = await authenticateDevice(
        deps.db,
        req.socket as TLSSocket,
        deps.domain,
        deps.anchors,
        trace,
      );
      await found.handler(deps, session, req, res, correlationId, found.label);
    })().catch(async (err: unknown) => {
      const error = isKeyferryError(err)
        ? err
        : new KeyferryError('internal', 'internal error', { cause: err });
      if (error.expose)
        deps.log.info({ correlationId, code: error.code, msg: error.message, path }, 'device-link refused');
      else deps.log.error({ correlationId, err, path }, 'device-link request failed');
      await auditRefusal(deps.db, trace, error, path, correlationId).catch((e: unknown) =>
        deps.log.error({ correlationId, err: e }, 'cannot write the audit log'),
      );
      if (res.headersSent) return void res.destroy();
      if (error.code === 'body_too_large') discardRest(req, res);
      sendProblem(res, error, correlationId);
    });
  };
}

async function auditRefusal(
  db: Db,
  trace: CallerTrace,
  error: KeyferryError,
  path: string,
  correlationId: string,
) {
  await recordAudit(db, {
    factoryId: trace.factory?.id ?? null,
    actor: `device:${trace.claim.deviceId ?? 'unknown'}`,
    action: 'device-link.refused',
    object: `path:${path}`,
    detail: {
      code: error.code,
      reason: error.expose ? error.message : 'internal error',
      product: trace.claim.nc12 ?? null,
    },
    correlationId,
  });
}

const manifest: Handler = async (deps, session, _req, res, correlationId) => {
  sendJson(res, 200, await deviceManifest(deps.db, session, { correlationId }));
};

const cacerts: Handler = async (deps, session, _req, res, _correlationId, label) => {
  const object = certificateObject(await deviceLinkObjects(deps.db, session.device), label);
  if (object.caId === null)
    throw new KeyferryError('internal', `certificate object ${object.name} has no CA`);
  const ca = await deps.issuingCas.get(session.factory, object.caId, object.validityDays);
  sendCertsOnly(res, encodeCertsOnly(ca.root ? [ca.certificate, ca.root] : [ca.certificate]));
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
  const csr = () => {
    if (body instanceof Error) throw body;
    checkCsrHeaders(req.headers);
    return decodeCsrBody(body);
  };
  const { certificate } = await enrollDevice(deps, session, label, csr, mode, { correlationId });
  sendCertsOnly(res, encodeCertsOnly([certificate]));
}

const report: Handler = async (deps, session, req, res, correlationId) => {
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
  sendJson(res, 200, await recordReport(deps.db, session, body, { correlationId }));
};

import { timingSafeEqual } from 'node:crypto';
import { KeyferryError } from '@keyferry/core';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Db } from '../../storage/database.ts';
import { principalOfTokenId } from '../../tokens/api-tokens.ts';
import { principalFactory } from '../auth.ts';
import type { Viewer } from './layout.ts';
import { type ConsoleSession, type ConsoleSessions, clearedCookieHeader, sessionCookie } from './sessions.ts';

declare module 'fastify' {
  interface FastifyRequest {
    consoleSession?: ConsoleSession;
  }
}

export const CSRF_HEADER = 'x-csrf-token';
export const SIGN_IN_PATH = '/console/sign-in';
export const SIGN_OUT_PATH = '/console/sign-out';

/**
 * Refuses a change sent from another site: browsers name the sender in Sec-Fetch-Site and
 * Origin; the SameSite=Strict cookie already stays home, this covers old browsers and the
 * sign-in form, which has no session yet. `Sec-Fetch-Site: same-origin` is proof enough: the
 * browser sets it and no page can, and it holds behind a TLS-terminating proxy, where Origin
 * names https and keyferryd (without api.trustProxy) sees http. Without it, Origin must be
 * this origin as keyferryd sees it (request.protocol and request.host, which honour
 * X-Forwarded-Proto/Host under api.trustProxy).
 */
export function assertSameOrigin(request: FastifyRequest): void {
  const site = request.headers['sec-fetch-site'];
  if (site === 'same-origin') return;
  const origin = request.headers.origin;
  const expected = `${request.protocol}://${request.host}`;
  if ((typeof site === 'string' && site !== 'none') || (origin && origin !== expected)) {
    throw new KeyferryError(
      'forbidden',
      'this request came from another site; open the console at its own address and try again',
    );
  }
}

/**
 * The check of every change (a preHandler: a form's field is parsed by then): same origin and
 * the page's CSRF token, sent as a header by fetch or as a form field.
 */
export function assertCsrf(request: FastifyRequest): void {
  if (request.method === 'GET' || request.method === 'HEAD') return;
  const session = request.consoleSession;
  if (!session)
    throw new KeyferryError('unauthenticated', `not signed in to the console: sign in at ${SIGN_IN_PATH}`);
  assertSameOrigin(request);
  const header = request.headers[CSRF_HEADER];
  const field = (request.body as { csrf?: unknown } | undefined)?.csrf;
  const sent = typeof header === 'string' ? header : typeof field === 'string' ? field : '';
  const a = Buffer.from(sent);
  const b = Buffer.from(session.csrf);
  if (a.length !== b.length || !timingSafeEqual(a, b)) {
    throw new KeyferryError(
      'forbidden',
      'the page is out of date (CSRF token missing or wrong): reload it and try again',
    );
  }
}

/**
 * Resolves the console session of a request, re-reading its token so that a revoked token
 * ends the session at once. Without one, a page request goes to the sign-in page and
 * anything else is refused: a signed-out browser sees nothing of the factory.
 */
export async function requireSession(
  db: Db,
  sessions: ConsoleSessions,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<FastifyReply | undefined> {
  const id = sessionCookie(request.headers.cookie);
  const session = sessions.find(id);
  const principal = session ? await principalOfTokenId(db, session.tokenId) : undefined;
  const factory = principal ? await principalFactory(db, principal) : undefined;
  if (!session || !principal || !factory) {
    sessions.end(id);
    if (id !== undefined) reply.header('set-cookie', clearedCookieHeader());
    const wantsPage = request.method === 'GET' && (request.headers.accept ?? '').includes('text/html');
    // signing out of a session that already ended (another tab, the 8 hours, a restart) is done
    const signingOut = request.method === 'POST' && request.routeOptions.url === SIGN_OUT_PATH;
    if (wantsPage || signingOut) return reply.code(303).header('location', SIGN_IN_PATH).send();
    throw new KeyferryError(
      'unauthenticated',
      `not signed in to the console (or the session ended): sign in at ${SIGN_IN_PATH}`,
    );
  }
  request.consoleSession = session;
  request.principal = principal;
  request.factory = factory;
  return undefined;
}

export function viewerOf(request: FastifyRequest): Viewer | undefined {
  if (!request.consoleSession || !request.principal || !request.factory) return undefined;
  return { factory: request.factory, principal: request.principal, csrf: request.consoleSession.csrf };
}

export function assertWriteScope(request: FastifyRequest): void {
  if (!request.principal?.scopes.has('write')) {
    throw new KeyferryError(
      'forbidden',
      'this token lacks the "write" scope needed to change the allow-list: sign in with a write token',
    );
  }
}

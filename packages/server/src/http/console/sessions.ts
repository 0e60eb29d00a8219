import { randomBytes } from 'node:crypto';
import type { FileId, IdFile } from '@keyferry/core';

/** How long a console sign-in lasts; the cookie's Max-Age is the same, so both end together. */
export const SESSION_LIFETIME_MS = 8 * 60 * 60 * 1000;
/** Sessions kept at once; signing in past it ends the oldest (memory stays bounded). */
export const MAX_SESSIONS = 1_000;
/** File imports a session remembers for their summary; older ones are forgotten first. */
export const MAX_IMPORTS_PER_SESSION = 5;
export const SESSION_COOKIE = 'kf_console';

/** A file import: the job that adds its ids and what the file itself said (line numbers). */
export interface ConsoleImport {
  jobId: string;
  file: Pick<IdFile, 'invalid' | 'duplicates'>;
  /** Decimal id → the file line it came from, to put line numbers on the job's refusals. */
  lines: Map<string, FileId>;
}

export interface ConsoleSession {
  /** The API token's id (never the token: the session cookie is a separate random value). */
  tokenId: string;
  /** Sent back by every form and fetch that changes something (double-submit CSRF token). */
  csrf: string;
  expiresAt: number;
  imports: Map<string, ConsoleImport>;
}

/**
 * Console sign-ins, in this process's memory: a restart signs everyone out, and behind a
 * load balancer the console needs sticky sessions. The cookie carries only a random id.
 */
export class ConsoleSessions {
  readonly #sessions = new Map<string, ConsoleSession>();

  create(tokenId: string, now = Date.now()): { id: string; session: ConsoleSession } {
    if (this.#sessions.size >= MAX_SESSIONS) {
      const oldest = this.#sessions.keys().next().value;
      if (oldest !== undefined) this.#sessions.delete(oldest);
    }
    const id = randomBytes(32).toString('base64url');
    const session: ConsoleSession = {
      tokenId,
      csrf: randomBytes(32).toString('base64url'),
      expiresAt: now + SESSION_LIFETIME_MS,
      imports: new Map(),
    };
    this.#sessions.set(id, session);
    return { id, session };
  }

  find(id: string | undefined, now = Date.now()): ConsoleSession | undefined {
    if (id === undefined) return undefined;
    const session = this.#sessions.get(id);
    if (session && session.expiresAt <= now) {
      this.#sessions.delete(id);
      return undefined;
    }
    return session;
  }

  end(id: string | undefined): void {
    if (id !== undefined) this.#sessions.delete(id);
  }
}

export function rememberImport(session: ConsoleSession, id: string, entry: ConsoleImport): void {
  if (session.imports.size >= MAX_IMPORTS_PER_SESSION) {
    const oldest = session.imports.keys().next().value;
    if (oldest !== undefined) session.imports.delete(oldest);
  }
  session.imports.set(id, entry);
}

/** The session id from a Cookie header (no cookie library for one name). */
export function sessionCookie(header: string | undefined): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === SESSION_COOKIE) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function sessionCookieHeader(id: string, secure: boolean): string {
  const maxAge = Math.floor(SESSION_LIFETIME_MS / 1000);
  return `${SESSION_COOKIE}=${id}; Path=/console; Max-Age=${maxAge}; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;
}

export function clearedCookieHeader(): string {
  return `${SESSION_COOKIE}=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict`;
}

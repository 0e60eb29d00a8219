import { randomBytes } from 'node:crypto';
import { type FileId, type IdFile, KeyferryError } from '@keyferry/core';

/** How long a console sign-in lasts; the cookie's Max-Age is the same, so both end together. */
export const SESSION_LIFETIME_MS = 8 * 60 * 60 * 1000;
/**
 * Sessions kept at once (memory stays bounded); signing in past it ends the oldest session of
 * the same factory, never another factory's.
 */
export const MAX_SESSIONS = 1_000;
/**
 * Sessions one factory holds at once, a tenth of {@link MAX_SESSIONS}: signing in past it ends
 * that factory's oldest, so one factory's tokens (a write token can mint more) cannot fill the
 * table and keep other factories from signing in.
 */
export const MAX_SESSIONS_PER_FACTORY = 100;
/** Sessions one API token holds at once; signing in past it ends that token's oldest. */
export const MAX_SESSIONS_PER_TOKEN = 16;
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
  /** The token's factory: its cap, or a full table, makes room only among this factory's sessions. */
  factoryId: number;
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
  readonly #onEnd: Array<(id: string) => void> = [];

  /** Calls `listener` with the id of every session that ends: signed out, expired, evicted, revoked. */
  onEnd(listener: (id: string) => void): void {
    this.#onEnd.push(listener);
  }

  /**
   * A new session of `principal`. Past {@link MAX_SESSIONS_PER_TOKEN} the token's oldest session
   * ends; past {@link MAX_SESSIONS_PER_FACTORY} or {@link MAX_SESSIONS} the factory's oldest.
   * When every session belongs to other factories the sign-in is refused: one factory's token
   * cannot sign out another's users (with the per-factory cap, only ten factories at their cap
   * can fill the table).
   */
  create(
    principal: { tokenId: string; factoryId: number },
    now = Date.now(),
  ): { id: string; session: ConsoleSession } {
    let ofToken: string | undefined;
    let tokenCount = 0;
    let ofFactory: string | undefined;
    let factoryCount = 0;
    for (const [id, s] of [...this.#sessions]) {
      if (s.expiresAt <= now) {
        this.end(id);
        continue;
      }
      if (s.tokenId === principal.tokenId && tokenCount++ === 0) ofToken = id;
      if (s.factoryId === principal.factoryId && factoryCount++ === 0) ofFactory = id;
    }
    if (tokenCount >= MAX_SESSIONS_PER_TOKEN) this.end(ofToken);
    else if (factoryCount >= MAX_SESSIONS_PER_FACTORY) this.end(ofFactory);
    else if (this.#sessions.size >= MAX_SESSIONS) {
      if (ofFactory === undefined) {
        throw new KeyferryError(
          'rate_limited',
          `the console has ${MAX_SESSIONS} sessions open, all of other factories: try again when some have signed out or expired`,
        );
      }
      this.end(ofFactory);
    }
    const id = randomBytes(32).toString('base64url');
    const session: ConsoleSession = {
      tokenId: principal.tokenId,
      factoryId: principal.factoryId,
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
      this.end(id);
      return undefined;
    }
    return session;
  }

  end(id: string | undefined): void {
    if (id === undefined || !this.#sessions.delete(id)) return;
    for (const listener of this.#onEnd) listener(id);
  }

  get size(): number {
    return this.#sessions.size;
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

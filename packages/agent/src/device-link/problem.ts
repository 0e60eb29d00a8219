import { AgentError, type AgentErrorKind } from '../agent-error.ts';

/** What an application/problem+json refusal carries (RFC 9457 plus keyferry's `code`). */
export interface Problem {
  readonly status: number;
  readonly code: string | undefined;
  readonly title: string | undefined;
  readonly detail: string | undefined;
}

const PLAN_LIMITS = new Set(['evaluation_expired', 'device_quota_exceeded', 'object_quota_exceeded']);

/** Reads a problem body; anything unreadable still yields the status. */
export function parseProblem(status: number, contentType: string | undefined, body: Buffer): Problem {
  let json: Record<string, unknown> = {};
  if (/json/i.test(contentType ?? '')) {
    try {
      const parsed: unknown = JSON.parse(body.toString('utf8'));
      if (parsed && typeof parsed === 'object') json = parsed as Record<string, unknown>;
    } catch {
      // not JSON after all: keep the status
    }
  }
  const text = (key: string) => (typeof json[key] === 'string' ? (json[key] as string) : undefined);
  const plain = /^text\//i.test(contentType ?? '') ? body.toString('utf8').trim().slice(0, 200) : undefined;
  return { status, code: text('code'), title: text('title'), detail: text('detail') ?? plain };
}

/** Seconds from a Retry-After header (delta-seconds or an HTTP date), if it has one. */
export function retryAfterSeconds(header: string | undefined, now = Date.now()): number | undefined {
  if (header === undefined) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim());
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}

/**
 * The agent error for a refusal: not allow-listed and plan limits have their own exit codes,
 * 429 and 5xx are transient (retried every DAEMON_INTERVAL, or after Retry-After), other 4xx
 * are refusals that a retry would only repeat.
 */
export function problemError(what: string, problem: Problem, retryAfter: number | undefined): AgentError {
  const reason = problem.detail ?? problem.title ?? `HTTP ${problem.status}`;
  const message = `${what}: ${reason}${problem.code ? ` (${problem.code})` : ` (HTTP ${problem.status})`}`;
  let kind: AgentErrorKind = 'refused';
  if (problem.code === 'device_not_allowlisted') kind = 'not_allowlisted';
  else if (problem.code !== undefined && PLAN_LIMITS.has(problem.code)) kind = 'plan_limit';
  else if (problem.status === 429 || problem.status >= 500 || problem.code === 'rate_limited')
    kind = 'transient';
  return new AgentError(kind, message, retryAfter === undefined ? {} : { retryAfter });
}

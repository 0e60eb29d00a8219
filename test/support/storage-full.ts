import { expect } from 'vitest';
import { deviceAgent, type Fleet, type SimDevice } from '../../bench/lib/device-link-load.ts';
import type { Answer, PinnedAgent } from '../../bench/lib/keep-alive-client.ts';
import type { DaemonProcess } from './processes.ts';

/** The refusal detail of a full disk keyferryd writes to (SQLite, a file in its data dir). */
export const KEYFERRYD_FULL = /storage is full.*free space on the disk holding keyferryd's data dir/;
/** The refusal detail of a full disk on the PostgreSQL server. */
export const POSTGRES_FULL =
  /PostgreSQL server's storage is full.*free space on the disk holding the PostgreSQL server's data directory/;

/** Checks that an answer is a 503 `unavailable` refusal (storage full, database gone), its detail matching `detail`. */
export function expectUnavailable(answer: Answer, detail: RegExp): void {
  expect(answer.status, answer.text).toBe(503);
  expect(answer.headers['content-type']).toMatch(/^application\/problem\+json/);
  const problem = JSON.parse(answer.text);
  expect(problem).toMatchObject({ status: 503, code: 'unavailable', detail: expect.stringMatching(detail) });
}

/** The refusal detail while the PostgreSQL server is down or restarting. */
export const DATABASE_GONE = /cannot reach its PostgreSQL database, so it changed nothing: retry later/;

/** A fetch Response as an Answer (status, content type, body text). */
export async function asAnswer(res: Response): Promise<Answer> {
  return {
    status: res.status,
    headers: { 'content-type': res.headers.get('content-type') ?? undefined },
    text: await res.text(),
  };
}

/** keyferryd's error-level log lines so far. */
export function errorLines(daemon: DaemonProcess): string[] {
  return daemon
    .stdout()
    .split('\n')
    .filter((l) => l.includes('"level":50'));
}

/**
 * A management call on the demo factory (`/ota/factories/demo<path>`) answered whatever its
 * status: Fleet.api throws on a refusal, which a full-disk test wants to look at.
 */
export function factoryApi(fleet: Fleet, token: string) {
  return (method: string, path: string, body?: unknown): Promise<Response> =>
    fetch(`${fleet.daemon.listen.api}/ota/factories/demo${path}`, {
      method,
      headers: { 'osf-token': token, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(60_000),
    });
}

/** A pinned device-link agent per call, all kept to be destroyed after the test. */
export function fleetAgents(fleet: () => Fleet) {
  const agents: PinnedAgent[] = [];
  return {
    agentOf(device: SimDevice): PinnedAgent {
      const agent = deviceAgent(fleet(), device);
      agents.push(agent);
      return agent;
    },
    destroy(): void {
      for (const agent of agents) agent.destroy();
    },
  };
}

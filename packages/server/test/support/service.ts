import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { inject } from 'vitest';
import { createDatabase } from '../../../../test/support/postgres.ts';
import type { JobRunnerOptions } from '../../src/allowlist/bulk-jobs.ts';
import { validateConfig } from '../../src/config/load.ts';
import type { ConfigInput } from '../../src/config/schema.ts';
import { type RunningService, startService } from '../../src/service.ts';
import type { BackendName } from './databases.ts';

export interface TestService {
  service: RunningService;
  url: string;
  token: string;
  dataDir: string;
  /** fetch against the API with the demo admin token in OSF-TOKEN (override with headers). */
  call(
    method: string,
    path: string,
    options?: { body?: unknown; raw?: string; headers?: Record<string, string> },
  ): Promise<{ status: number; json: any; headers: Headers }>;
  stop(): Promise<void>;
}

export interface StartTestOptions {
  log?: Logger;
  jobs?: JobRunnerOptions;
  /** Another node on the same database and master key (its demo token works here too). */
  sharedWith?: TestService;
}

let counter = 0;

/** An in-process keyferryd on free loopback ports with a fresh database of the chosen backend. */
export async function startTestService(
  backend: BackendName = 'sqlite',
  overrides: ConfigInput = {},
  options: StartTestOptions = {},
): Promise<TestService> {
  const dataDir = mkdtempSync(join(tmpdir(), 'keyferry-svc-'));
  const shared = options.sharedWith?.service.ctx.config;
  const storage =
    shared?.storage ??
    (backend === 'postgres'
      ? {
          kind: 'postgres' as const,
          url: await createDatabase(inject('postgresUrl'), `svc_${process.pid}_${counter++}`),
        }
      : { kind: 'sqlite' as const });
  const config = validateConfig({
    dataDir,
    storage,
    // a second node on the same database must unwrap the keys the first one stored
    ...(shared && { keyCustody: { kind: 'soft', masterKeyFile: join(shared.dataDir, 'master.key') } }),
    api: { listen: '127.0.0.1:0' },
    deviceLink: { listen: '127.0.0.1:0' },
    gateway: { listen: '127.0.0.1:0' },
    log: { level: 'silent' },
    ...overrides,
  });
  const { sharedWith, ...startOptions } = options;
  const service = await startService({ config, embeddedDefaults: true, ...startOptions });
  const token = sharedWith?.token ?? service.demo?.token;
  if (!token) throw new Error('expected a demo factory on a fresh database');
  const url = service.addresses.api;
  return {
    service,
    url,
    token,
    dataDir,
    async call(method, path, options = {}) {
      const headers: Record<string, string> = { 'osf-token': token, ...options.headers };
      let body: string | undefined;
      if (options.raw !== undefined) body = options.raw;
      else if (options.body !== undefined) {
        body = JSON.stringify(options.body);
        headers['content-type'] ??= 'application/json';
      }
      const res = await fetch(url + path, { method, headers, body: body ?? null });
      const text = await res.text();
      let json: unknown = text;
      try {
        json = text === '' ? undefined : JSON.parse(text);
      } catch {}
      return { status: res.status, json, headers: res.headers };
    },
    async stop() {
      await service.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

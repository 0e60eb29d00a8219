import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type PostgresCluster, startPostgres } from '../../../../test/support/postgres.ts';
import { validateConfig } from '../../src/config/load.ts';
import { type RunningService, startService } from '../../src/service.ts';

describe('GET /readyz: database, key custody and listeners', () => {
  let cluster: PostgresCluster | undefined;
  let service: RunningService | undefined;
  const dataDir = mkdtempSync(join(tmpdir(), 'keyferry-ready-'));
  afterAll(async () => {
    await service?.close().catch(() => {});
    try {
      cluster?.stop();
    } catch {}
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('is ready on a running PostgreSQL; once PostgreSQL goes down keyferryd stays up (no crash on the dropped connections), /readyz answers 503 naming the database, /healthz stays ok', async () => {
    // a cluster of its own: this test stops it
    cluster = await startPostgres();
    service = await startService({
      config: validateConfig({
        dataDir,
        storage: { kind: 'postgres', url: cluster.url, poolSize: 2 },
        api: { listen: '127.0.0.1:0' },
        deviceLink: { listen: '127.0.0.1:0' },
        gateway: { listen: '127.0.0.1:0' },
        log: { level: 'silent' },
      }),
      embeddedDefaults: true,
    });
    const api = service.addresses.api;
    const ready = await fetch(`${api}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready', storage: 'postgres', custody: 'soft' });

    cluster.stop();
    cluster = undefined;
    const down = await fetch(`${api}/readyz`);
    expect(down.status).toBe(503);
    expect(await down.json()).toEqual({ status: 'unavailable', reason: 'database not reachable' });
    const alive = await fetch(`${api}/healthz`);
    expect(alive.status).toBe(200);
  });

  it('answers 503 while the listeners are going down', async () => {
    const ctx = service!.ctx;
    ctx.lifecycle!.serving = false; // what close() does first
    const { buildManagementApi } = await import('../../src/http/app.ts');
    const app = await buildManagementApi({ ...ctx, database: { ...ctx.database } });
    // the database is down too by now: only the first reason is named, as checks stop there
    const res = await app.inject({ method: 'GET', url: '/readyz' });
    expect(res.statusCode).toBe(503);
    await app.close();
  });
});

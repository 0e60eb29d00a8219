import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { routeTable } from '../../src/http/route-table.ts';
import { OPENAPI_FILE } from '../../src/http/routes/openapi.ts';
import { startTestService, type TestService } from '../support/service.ts';

const METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const;

/** `METHOD /path/{param}` for every operation of the document. */
function documented(doc: { paths: Record<string, Record<string, unknown>> }): string[] {
  return Object.entries(doc.paths).flatMap(([path, item]) =>
    METHODS.filter((m) => m in item).map((m) => `${m.toUpperCase()} ${path}`),
  );
}

describe('docs/openapi.yaml', () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService('sqlite');
  });
  afterAll(async () => {
    await svc.stop();
  });

  it('documents exactly the routes keyferryd registers', () => {
    const doc = parse(readFileSync(OPENAPI_FILE, 'utf8'));
    expect(doc.openapi).toMatch(/^3\.1\./);
    const registered = routeTable(svc.service.api).map(
      (r) => `${r.method} ${r.url.replace(/:([A-Za-z]+)/g, '{$1}')}`,
    );
    expect(registered.length).toBeGreaterThan(20);
    const docs = documented(doc);
    expect(
      registered.filter((r) => !docs.includes(r)),
      'registered but not documented',
    ).toEqual([]);
    expect(
      docs.filter((d) => !registered.includes(d)),
      'documented but not registered',
    ).toEqual([]);
    for (const path of Object.keys(doc.paths)) {
      for (const name of path.matchAll(/\{([A-Za-z]+)\}/g)) {
        const params = JSON.stringify(doc.paths[path]);
        expect(params, `${path} declares {${name[1]}}`).toMatch(
          new RegExp(`parameters/${name[1]}"|"name":"${name[1]}"`),
        );
      }
    }
  });

  it('is served without a token at GET /openapi.yaml', async () => {
    const res = await fetch(`${svc.url}/openapi.yaml`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('application/yaml');
    expect(await res.text()).toBe(readFileSync(OPENAPI_FILE, 'utf8'));
  });
});

import type { TestProject } from 'vitest/node';
import { buildAll } from '../../scripts/build.ts';
import { type PostgresCluster, startPostgres } from './postgres.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    postgresUrl: string;
  }
}

let cluster: PostgresCluster | undefined;

/**
 * The programs are built first, so the tests that run them never run a stale build (every
 * vitest run, `npm test` or one file); then one PostgreSQL cluster for the whole run, in
 * which each test file makes its own database.
 */
export default async function setup(project: TestProject): Promise<() => void> {
  await buildAll();
  cluster = await startPostgres();
  project.provide('postgresUrl', cluster.url);
  return () => cluster?.stop();
}

import type { TestProject } from 'vitest/node';
import { type PostgresCluster, startPostgres } from './postgres.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    postgresUrl: string;
  }
}

let cluster: PostgresCluster | undefined;

/** One PostgreSQL cluster for the whole run; each test file makes its own database in it. */
export default async function setup(project: TestProject): Promise<() => void> {
  cluster = await startPostgres();
  project.provide('postgresUrl', cluster.url);
  return () => cluster?.stop();
}

/**
 * PostgreSQL for the benches that can run keyferryd on it (`--storage postgres`): the options,
 * and the database — the one `--postgres-url` names, or a throwaway cluster started as the
 * tests start theirs (fsync off), removed by `stop()`.
 */
import { createDatabase, startPostgres } from '../../test/support/postgres.ts';
import { type OptionSpec, oneOf } from './options.ts';

export const storageOption = (help: string): OptionSpec => ({
  value: 'sqlite|postgres',
  default: 'sqlite',
  help,
  check: oneOf('sqlite', 'postgres'),
});

export const postgresUrlOption: OptionSpec = {
  value: 'URL',
  help: 'with --storage postgres: an empty database to use (default: a throwaway local cluster)',
  check: (t) => (/^postgres(ql)?:\/\//.test(t) ? undefined : 'takes a postgres:// URL'),
};

/** Refuses `--postgres-url` without `--storage postgres` (exit 2). */
export function checkPostgresUrl(options: { storage: string; 'postgres-url'?: string }): void {
  if (options['postgres-url'] && options.storage !== 'postgres') {
    console.error('--postgres-url needs --storage postgres\nRun with --help for the options.');
    process.exit(2);
  }
}

export interface BenchDatabase {
  url: string;
  /** The throwaway cluster's postmaster, whose process tree is the database's CPU; none for `--postgres-url`. */
  pid?: number;
  stop(): void;
}

/** The database of a PostgreSQL run: `url` when given, else a throwaway cluster's. */
export async function benchPostgres(
  url: string | undefined,
  say: (line: string) => void,
): Promise<BenchDatabase> {
  if (url) return { url, stop() {} };
  say('starting a throwaway PostgreSQL cluster');
  const cluster = await startPostgres();
  try {
    return {
      url: await createDatabase(cluster.url, 'keyferry_bench'),
      pid: cluster.pid,
      stop: () => cluster.stop(),
    };
  } catch (error) {
    cluster.stop();
    throw error;
  }
}

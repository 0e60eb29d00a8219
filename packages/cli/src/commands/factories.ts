import type { Command } from 'commander';
import { commandContext } from '../context.ts';
import { formatTable, printJson } from '../output.ts';

interface FactoryRow {
  name: string;
  'repo-id': string;
}

export function registerFactories(program: Command): void {
  program
    .command('factories')
    .description('list the factories this token can see, with their repo ids')
    .action(async (_opts, command: Command) => {
      const { api, out } = commandContext(command);
      const rows = await api.call<FactoryRow[]>('GET', '/ota/factories/');
      if (out.json) return printJson(out, rows);
      out.write(
        formatTable(
          ['NAME', 'REPO ID'],
          rows.map((f) => [f.name, f['repo-id']]),
        ),
      );
    });
}

import { type Command, Option } from 'commander';
import { CliError } from '../cli-error.ts';
import { commandContext } from '../context.ts';
import { formatTable, printJson } from '../output.ts';
import { wordlessDefault } from '../usage.ts';
import { durationFromNow } from './duration-flag.ts';

interface TokenRow {
  id: string;
  description: string;
  scopes: string[];
  'created-at': string;
  'expires-at': string | null;
  'revoked-at': string | null;
  token?: string;
}

function state(t: TokenRow, now = Date.now()): string {
  if (t['revoked-at']) return `revoked ${t['revoked-at']}`;
  if (t['expires-at'])
    return `${Date.parse(t['expires-at']) <= now ? 'expired' : 'expires'} ${t['expires-at']}`;
  return 'never expires';
}

/** `keyferry tokens list|create|revoke`: the API tokens of the factory. */
export function registerTokens(program: Command): void {
  const tokens = program.command('tokens').description("the factory's API tokens: list, create, revoke");
  wordlessDefault(
    tokens
      .command('list', { isDefault: true })
      .description('list the tokens (never their secrets), revoked and expired ones too'),
  ).action(async (_opts, command: Command) => {
    const { api, out } = commandContext(command);
    const rows = await api.call<TokenRow[]>('GET', api.factoryPath('tokens/'));
    if (out.json) return printJson(out, rows);
    out.write(
      formatTable(
        ['ID', 'SCOPES', 'CREATED', 'STATE', 'DESCRIPTION'],
        rows.map((t) => [t.id, t.scopes.join(','), t['created-at'], state(t), t.description]),
      ),
    );
  });
  tokens
    .command('create')
    .description('create a token; its secret is printed once on stdout')
    .addOption(
      new Option('--scope <scope>', 'read (look) or write (look and change)')
        .choices(['read', 'write'])
        .makeOptionMandatory(),
    )
    .option('--expires <duration>', 'lifetime, e.g. 30d, 12h, 1y (default: never expires)')
    .requiredOption('--description <text>', 'what the token is for (shown in tokens list)')
    .action(async (opts: { scope: string; expires?: string; description: string }, command: Command) => {
      const { api, out } = commandContext(command);
      const expiresAt = opts.expires === undefined ? undefined : durationFromNow('--expires', opts.expires);
      const created = await api.call<TokenRow>('POST', api.factoryPath('tokens/'), {
        description: opts.description,
        scopes: opts.scope === 'write' ? ['read', 'write'] : ['read'],
        ...(expiresAt ? { 'expires-at': expiresAt.toISOString() } : {}),
      });
      if (out.json) return printJson(out, created);
      if (!created.token) throw new CliError('keyferryd answered no token: is it an older version?');
      out.write(`${created.token}\n`);
      out.error(
        `Token ${created.id}, scopes ${created.scopes.join(' ')}, ${state(created)}. Shown once: keep it in a file for --token-file.\n`,
      );
    });
  tokens
    .command('revoke <id>')
    .description('revoke a token: keyferryd refuses it from its next request on')
    .action(async (id: string, _opts, command: Command) => {
      const { api, out } = commandContext(command);
      const revoked = await api.call<TokenRow>('DELETE', api.factoryPath(`tokens/${encodeURIComponent(id)}`));
      if (out.json) return printJson(out, revoked);
      out.write(`Revoked token ${revoked.id} at ${revoked['revoked-at']}\n`);
    });
}

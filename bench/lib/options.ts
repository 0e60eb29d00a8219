/**
 * Command-line options of the benches: `--help` prints the usage, an unknown option or a value
 * that is not what the option takes is refused with a message naming it, exit 2.
 */
import { parseArgs } from 'node:util';

export interface OptionSpec {
  /** What the value is, for --help (`N`, `S`, `sqlite|postgres`; empty for a flag). */
  value: string;
  default?: string;
  help: string;
  /** Accepts the text or returns what is wrong with it. */
  check?: (text: string) => string | undefined;
}

export const positiveInteger = (text: string) =>
  /^[1-9][0-9]*$/.test(text) ? undefined : 'takes a positive integer';

export const positiveNumber = (text: string) =>
  /^[0-9]+(\.[0-9]+)?$/.test(text) && Number(text) > 0 ? undefined : 'takes a positive number';

export const oneOf =
  (...choices: string[]) =>
  (text: string) =>
    choices.includes(text) ? undefined : `takes one of ${choices.join(', ')}`;

/** Parses argv against `specs`; exits after --help or a refusal. */
export function benchOptions<K extends string>(
  usage: string,
  specs: Record<K, OptionSpec>,
  argv = process.argv.slice(2),
): Record<K, string> {
  const help = () =>
    [
      usage,
      '',
      'Options:',
      ...Object.entries<OptionSpec>(specs).map(([name, s]) => {
        const flag = `--${name}${s.value ? ` ${s.value}` : ''}`;
        return `  ${flag.padEnd(28)} ${s.help}${s.default === undefined ? '' : ` (default ${s.default})`}`;
      }),
      `  ${'--help'.padEnd(28)} this text`,
    ].join('\n');
  const refuse = (why: string): never => {
    console.error(`${why}\nRun with --help for the options.`);
    process.exit(2);
  };
  let values: Record<string, string | boolean | undefined>;
  try {
    const options = Object.fromEntries(
      Object.entries<OptionSpec>(specs).map(([name, s]) => [
        name,
        { type: s.value ? ('string' as const) : ('boolean' as const) },
      ]),
    );
    ({ values } = parseArgs({
      args: argv,
      options: { ...options, help: { type: 'boolean' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    return refuse((error as Error).message);
  }
  if (values.help) {
    console.log(help());
    process.exit(0);
  }
  const out = {} as Record<K, string>;
  for (const [name, s] of Object.entries<OptionSpec>(specs) as [K, OptionSpec][]) {
    const given = values[name];
    const text = typeof given === 'boolean' ? String(given) : (given ?? s.default ?? '');
    const wrong = given !== undefined && typeof given === 'string' ? s.check?.(text) : undefined;
    if (wrong) refuse(`--${name} ${wrong}, not ${JSON.stringify(text)}`);
    out[name] = text;
  }
  return out;
}

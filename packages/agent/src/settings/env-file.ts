import { readFileSync } from 'node:fs';
import { AgentError } from '../agent-error.ts';

const LINE = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/;

/**
 * Reads a systemd-style environment file (`/etc/default/lmp-el2go-auto-register`): `KEY=VALUE`
 * lines, blank lines and `#` comments, values optionally in single or double quotes (in double
 * quotes `\"` and `\\` are escapes). Unquoted values end at ` #`. A line that is none of these
 * is refused naming the file and line, so a typo never silently drops a setting.
 */
export function parseEnvFile(text: string, path: string): Map<string, string> {
  const values = new Map<string, string>();
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const match = LINE.exec(line);
    if (!match) {
      throw new AgentError(
        'setting_invalid',
        `${path}:${index + 1}: expected KEY=VALUE, found ${JSON.stringify(line.slice(0, 60))}`,
      );
    }
    const [, key = '', value = ''] = match;
    values.set(key, unquote(value, `${path}:${index + 1}`));
  });
  return values;
}

function unquote(value: string, where: string): string {
  const quote = value[0];
  if (quote === '"' || quote === "'") {
    const end = value.lastIndexOf(quote);
    if (
      end === 0 ||
      value
        .slice(end + 1)
        .trim()
        .replace(/^#.*/, '') !== ''
    ) {
      throw new AgentError(
        'setting_invalid',
        `${where}: unterminated ${quote} quote in ${JSON.stringify(value)}`,
      );
    }
    const inner = value.slice(1, end);
    return quote === '"' ? inner.replace(/\\(["\\$`])/g, '$1') : inner;
  }
  return value.replace(/\s+#.*$/, '').trim();
}

/**
 * The env file's settings, or undefined when it does not exist and `required` is false.
 * A missing required file is `env_file_missing`, naming the path.
 */
export function readEnvFile(path: string, required: boolean): Map<string, string> | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !required) return undefined;
    const why = code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? String(error)})`;
    throw new AgentError(
      'env_file_missing',
      `env file ${path} ${why}; create it (it must set REPOID) or name another with --env-file`,
      { cause: error },
    );
  }
  return parseEnvFile(text, path);
}

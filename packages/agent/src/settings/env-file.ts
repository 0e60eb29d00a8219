import { readFileSync } from 'node:fs';
import { AgentError } from '../agent-error.ts';

/** What systemd counts as blank around keys and values, and what ends a line. */
const WHITESPACE = ' \t\n\r';
const NEWLINE = '\n\r';
/** Characters a backslash escapes inside double quotes (POSIX shell); others keep the backslash. */
const DOUBLE_QUOTE_ESCAPES = '"\\`$';
/** A name systemd keeps: letters, digits and `_`, not starting with a digit. */
const VALID_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

type State =
  | 'preKey'
  | 'key'
  | 'preValue'
  | 'value'
  | 'valueEscape'
  | 'single'
  | 'double'
  | 'doubleEscape'
  | 'comment'
  | 'commentEscape';

/**
 * Reads an environment file exactly as systemd reads `EnvironmentFile=` (systemd.exec(5)),
 * because the unit hands the same file to systemd and the agent reads it again itself: both
 * must see the same values. The rules, one state machine over the characters:
 *
 * - lines starting (after blanks) with `#` or `;` are comments (a backslash at their end
 *   continues nothing, as since systemd 254); there are no comments after a value;
 * - lines without `=` are ignored, and so are assignments whose name is not a valid variable
 *   name (`export X=1` has the name `export X`);
 * - blanks around the name and around the value are dropped, blanks inside an unquoted value
 *   kept; in an unquoted value a backslash keeps the next character and a backslash at the
 *   end of the line joins the next line;
 * - `'…'` keeps everything up to the next `'` verbatim, newlines included; `"…"` too, except
 *   that `\"`, `\\`, `` \` ``, `\$` stand for the character, a backslash-newline is dropped and
 *   any other backslash is kept; quoted and unquoted pieces directly after each other join
 *   (`A="x"y` is `xy`), a quote later in an unquoted value is an ordinary character;
 * - an unterminated quote runs to the end of the file; a later assignment of the same name wins.
 */
export function parseEnvFile(text: string): Map<string, string> {
  const values = new Map<string, string>();
  let state: State = 'preKey';
  let key = '';
  let value = '';
  /** Where trailing blanks of the key / unquoted value begin, or -1 when there are none. */
  let keyBlank = -1;
  let valueBlank = -1;
  const push = () => {
    const name = keyBlank >= 0 ? key.slice(0, keyBlank) : key;
    const text = valueBlank >= 0 ? value.slice(0, valueBlank) : value;
    if (VALID_NAME.test(name)) values.set(name, text);
    key = '';
    value = '';
    keyBlank = -1;
    valueBlank = -1;
  };
  for (const c of text) {
    switch (state) {
      case 'preKey':
        if (c === '#' || c === ';') state = 'comment';
        else if (!WHITESPACE.includes(c)) {
          state = 'key';
          key = c;
        }
        break;
      case 'key':
        if (NEWLINE.includes(c)) {
          state = 'preKey';
          key = '';
          keyBlank = -1;
        } else if (c === '=') {
          state = 'preValue';
        } else {
          if (!WHITESPACE.includes(c)) keyBlank = -1;
          else if (keyBlank < 0) keyBlank = key.length;
          key += c;
        }
        break;
      case 'preValue':
        if (NEWLINE.includes(c)) {
          state = 'preKey';
          push();
        } else if (c === "'") state = 'single';
        else if (c === '"') state = 'double';
        else if (c === '\\') state = 'valueEscape';
        else if (!WHITESPACE.includes(c)) {
          state = 'value';
          value += c;
        }
        break;
      case 'value':
        if (NEWLINE.includes(c)) {
          state = 'preKey';
          push();
        } else if (c === '\\') {
          state = 'valueEscape';
          valueBlank = -1;
        } else {
          if (!WHITESPACE.includes(c)) valueBlank = -1;
          else if (valueBlank < 0) valueBlank = value.length;
          value += c;
        }
        break;
      case 'valueEscape':
        state = 'value';
        if (!NEWLINE.includes(c)) value += c;
        break;
      case 'single':
        if (c === "'") state = 'preValue';
        else value += c;
        break;
      case 'double':
        if (c === '"') state = 'preValue';
        else if (c === '\\') state = 'doubleEscape';
        else value += c;
        break;
      case 'doubleEscape':
        state = 'double';
        if (DOUBLE_QUOTE_ESCAPES.includes(c)) value += c;
        else if (c !== '\n') value += `\\${c}`;
        break;
      case 'comment':
        if (c === '\\') state = 'commentEscape';
        else if (NEWLINE.includes(c)) state = 'preKey';
        break;
      case 'commentEscape':
        // systemd 254 and later: a backslash does not carry a comment onto the next line.
        state = NEWLINE.includes(c) ? 'preKey' : 'comment';
        break;
    }
  }
  if (state !== 'preKey' && state !== 'key' && state !== 'comment' && state !== 'commentEscape') push();
  return values;
}

/**
 * The env file's settings, or undefined when it does not exist and `required` is false (the
 * unit's `EnvironmentFile=-…`: systemd has then put the settings in the environment, if any).
 * A missing required file is `env_file_missing`, naming the path.
 */
export function readEnvFile(
  path: string,
  required: boolean,
  what: { readonly name: string; readonly fix: string } = {
    name: 'env file',
    fix: 'create it (it must set REPOID) or name another with --env-file',
  },
): Map<string, string> | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !required) return undefined;
    const why = code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? String(error)})`;
    throw new AgentError('env_file_missing', `${what.name} ${path} ${why}; ${what.fix}`, { cause: error });
  }
  return parseEnvFile(text);
}

import type { Command } from 'commander';

/**
 * Commander's usage errors, in keyferry's words: one `ERROR:` line saying what the user most
 * likely meant. Commander's own text stays the input, so new kinds pass through unchanged.
 */
export function usageError(text: string): string {
  const message = text.replace(/^error: /, '').trimEnd();
  const unknown = /^unknown command '(.*)'(?:\n\(Did you mean (.*)\?\))?$/.exec(message);
  if (unknown) {
    const [, word, suggestion] = unknown;
    return suggestion === undefined
      ? `ERROR: unknown subcommand '${word}'; --help lists them\n`
      : `ERROR: unknown subcommand '${word}'; did you mean '${suggestion}'?\n`;
  }
  return `ERROR: ${message}\n`;
}

/**
 * Makes `cmd` the default subcommand of its parent that takes no words (`el2g devices` lists).
 * Commander hands a default subcommand every word it does not know, so `el2g devices shwo`
 * would be "too many arguments for 'list'": a word there is a mistyped subcommand instead.
 */
export function wordlessDefault(cmd: Command): Command {
  return cmd.allowExcessArguments(true).hook('preAction', (_hooked, action) => {
    if (action.args.length === 0) return;
    const parent = action.parent as Command;
    if (parent.args[0] === action.name()) {
      action.error(`error: '${action.name()}' takes no arguments, got '${action.args.join(' ')}'`, {
        code: 'commander.excessArguments',
        exitCode: 2,
      });
    }
    // commander's own refusal, with its "did you mean" from the parent's subcommands
    (parent as unknown as { unknownCommand(): never }).unknownCommand();
  });
}

/**
 * A failure the CLI reports as one `ERROR: …` line, with the exit code that says what kind:
 * 2 for a usage error (a bad flag, flag value or argument, a server URL without http:// or
 * https://, no factory or no token given; found before any request; commander's own refusals are
 * 2 too), 1 (the default) when the request or the work fails or a file's contents are wrong.
 */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
  }
}

/**
 * One plain line per step on stdout, warnings and failures on stderr: journald adds the
 * time and unit, so the agent adds neither, and it writes no colour codes at all.
 */
export interface Log {
  info(line: string): void;
  warn(line: string): void;
}

export const consoleLog: Log = {
  info: (line) => process.stdout.write(`${line}\n`),
  warn: (line) => process.stderr.write(`${line}\n`),
};

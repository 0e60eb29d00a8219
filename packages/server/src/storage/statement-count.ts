/**
 * Statements this process has sent to its database, BEGIN and COMMIT included: the
 * `keyferry_db_statements_total` metric, and how the bench counts statements per device (a
 * figure the machine's noise does not move). Counted where they leave for the database: the
 * SQLite statement cache (statement-cache.ts), the SQLite thread reader (thread-reader.ts) and the
 * PostgreSQL client (named-statements.ts).
 */
let sent = 0;
/** The distinct SQL texts sent while a recording runs (recordStatementTexts). */
let recording: Set<string> | undefined;

export function countStatement(text: unknown): void {
  sent++;
  if (recording && typeof text === 'string') recording.add(text);
}

export function statementsSent(): number {
  return sent;
}

/**
 * Starts keeping the distinct SQL texts this process sends; the returned function stops and
 * gives them in the order they were first sent. What a test reads every statement's plan
 * from (test/devicelink/plans-at-scale.test.ts).
 */
export function recordStatementTexts(): () => string[] {
  const texts = new Set<string>();
  recording = texts;
  return () => {
    if (recording === texts) recording = undefined;
    return [...texts];
  };
}

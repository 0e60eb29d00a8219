/**
 * Statements this process has sent to its database, BEGIN and COMMIT included: the
 * `keyferry_db_statements_total` metric, and how the bench counts statements per device (a
 * figure the machine's noise does not move). Counted where they leave for the database: the
 * SQLite statement cache (statement-cache.ts) and the PostgreSQL client (named-statements.ts).
 */
let sent = 0;

export function countStatement(): void {
  sent++;
}

export function statementsSent(): number {
  return sent;
}

/**
 * Runs `work` and counts the turns the event loop took meanwhile (setImmediate callbacks that
 * ran): a statement SQLite runs on the event loop lets none happen, so work done in several
 * statements with a turn between them shows as turns.
 */
export async function withTurns<T>(work: () => Promise<T>): Promise<{ result: T; turns: number }> {
  let turns = 0;
  let working = true;
  const tick = () => {
    if (!working) return;
    turns++;
    setImmediate(tick);
  };
  setImmediate(tick);
  try {
    return { result: await work(), turns };
  } finally {
    working = false;
  }
}

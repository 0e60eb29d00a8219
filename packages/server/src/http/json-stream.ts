import { Readable } from 'node:stream';

/**
 * A JSON array written element by element as `items` yields them, for answers too long to
 * build in memory. A failure midway ends the stream with an error: the client then gets
 * truncated JSON (the connection is cut), never a short array that parses.
 */
export function jsonArrayStream(items: AsyncIterable<unknown>): Readable {
  return Readable.from(
    (async function* () {
      let first = true;
      yield '[';
      for await (const item of items) {
        yield (first ? '' : ',') + JSON.stringify(item);
        first = false;
      }
      yield ']';
    })(),
  );
}

/** Error codes a write gets once the reading end of its pipe (or terminal) has gone. */
const CLOSED_OUTPUT_CODES = new Set(['EPIPE', 'ERR_STREAM_DESTROYED']);

/**
 * A reader that stops early (`keyferry el2g devices | head -3`) closes the pipe, and the next
 * write fails with EPIPE, which Node raises as an unhandled 'error' with a stack trace. Unix
 * tools end quietly then, with success: the reader has what it wanted. `end` is called once,
 * on the first such failure of any of `streams`; other stream errors stay fatal.
 */
export function endQuietlyWhenOutputCloses(streams: readonly NodeJS.WritableStream[], end: () => void): void {
  let ended = false;
  for (const stream of streams) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (!CLOSED_OUTPUT_CODES.has(err.code ?? '')) throw err;
      if (ended) return;
      ended = true;
      end();
    });
  }
}

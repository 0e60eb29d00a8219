/** Error codes a write gets once the reading end of its pipe (or terminal) has gone. */
const CLOSED_OUTPUT_CODES = new Set(['EPIPE', 'ERR_STREAM_DESTROYED']);

/** Errors a {@link writeChecked} caller was given: theirs to handle, not a reason to end. */
const handedToWriter = new WeakSet<Error>();

/**
 * Writes `text` to `stream`, resolving once it is written and rejecting with the write's error
 * (ENOSPC on a full disk, EPIPE on a closed pipe) otherwise: for output that must not be lost
 * unnoticed, such as a secret shown once. That error is the caller's: the stream's 'error' it
 * also raises neither ends the program quietly ({@link endQuietlyWhenOutputCloses}) nor crashes it.
 */
export function writeChecked(stream: NodeJS.WritableStream, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const failed = (err: Error) => {
      handedToWriter.add(err);
      reject(err);
    };
    try {
      // the callback comes before the stream's 'error' event (Node's Writable promises that)
      stream.write(text, (err) => (err ? failed(err) : resolve()));
    } catch (err) {
      failed(err as Error);
    }
  });
}

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
      if (handedToWriter.has(err)) return;
      if (!CLOSED_OUTPUT_CODES.has(err.code ?? '')) throw err;
      if (ended) return;
      ended = true;
      end();
    });
  }
}

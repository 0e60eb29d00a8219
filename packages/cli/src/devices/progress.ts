/** Where progress goes: a terminal gets a redrawn bar, anything else plain lines. */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(text: string): unknown;
}

export interface Progress {
  update(done: number): void;
  finish(): void;
}

const BAR_WIDTH = 30;
/** Without a terminal, a line every this share of the work (and at the end). */
const PLAIN_STEP = 0.1;

/**
 * A progress bar for `devices add --file`: on a TTY one line redrawn in place
 * (`[######......]  12000/50000 ids  24%`); otherwise a plain line each tenth of the way, so
 * logs of non-interactive runs stay short and readable.
 */
export function createProgress(stream: ProgressStream, total: number, what = 'ids'): Progress {
  let lastPlain = -1;
  let drawn = false;
  const tty = stream.isTTY === true;
  const render = (done: number) => {
    const share = total === 0 ? 1 : done / total;
    const percent = Math.floor(share * 100);
    if (!tty) return `${done}/${total} ${what} sent (${percent}%)\n`;
    const filled = Math.round(share * BAR_WIDTH);
    const line = `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] ${done}/${total} ${what} ${percent}%`;
    return `\r${line.slice(0, Math.max(10, (stream.columns ?? 80) - 1))}`;
  };
  return {
    update(done) {
      if (tty) {
        stream.write(render(done));
        drawn = true;
        return;
      }
      const step = done >= total ? Math.ceil(1 / PLAIN_STEP) : Math.floor(done / total / PLAIN_STEP);
      if (step > lastPlain) {
        lastPlain = step;
        stream.write(render(done));
      }
    },
    finish() {
      if (tty && drawn) stream.write('\n');
    },
  };
}

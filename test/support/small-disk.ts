import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A small file system of its own at `dir` (tmpfs of `size`, e.g. "32m"), for a test that fills
 * its disk. Needs root, as the tests and CI run; `unmount` ends it, whatever it holds.
 */
export interface SmallDisk {
  dir: string;
  /** Writes zeros to a file on the disk until the disk is full (ENOSPC); the bytes written. */
  fill(): number;
  /** Removes what `fill` wrote: the disk has room again. */
  free(): void;
  /** Gives back the last `bytes` of what `fill` wrote: the disk has about that much room. */
  release(bytes: number): void;
  unmount(): void;
}

export function mountSmallDisk(dir: string, size: string): SmallDisk {
  mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]);
  const filler = join(dir, 'filler');
  return {
    dir,
    fill() {
      const fd = openSync(filler, 'a');
      let written = 0;
      try {
        // big chunks first, then ever smaller ones, down to the last free byte
        for (const size of [1 << 20, 1 << 14, 512, 1]) {
          const chunk = Buffer.alloc(size);
          for (;;) {
            try {
              written += writeSync(fd, chunk);
            } catch (error) {
              if ((error as NodeJS.ErrnoException).code === 'ENOSPC') break;
              throw error;
            }
          }
        }
      } finally {
        closeSync(fd);
      }
      return written;
    },
    free() {
      rmSync(filler, { force: true });
    },
    release(bytes) {
      truncateSync(filler, Math.max(0, statSync(filler).size - bytes));
    },
    unmount() {
      execFileSync('umount', ['--lazy', dir]);
    },
  };
}

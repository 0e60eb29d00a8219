import { closeSync, fchmodSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Writes `path` so that a reader (or a reboot) sees the old content or the new, never a part:
 * a temp file beside it, fsync, rename over the target, fsync the directory. The temp file is
 * created exclusively (whatever sat at its name, a symlink too, is removed, never written
 * through) and has `mode` before any byte goes in, whatever the umask: a secret written 0600
 * is never in a file others may read. It is removed again when anything fails.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode: number): void {
  const temp = `${path}.${process.pid}.tmp`;
  rmSync(temp, { force: true });
  const fd = openSync(temp, 'wx', mode);
  try {
    try {
      fchmodSync(fd, mode); // the umask may have taken bits off the mode openSync was given
      writeWhole(fd, typeof data === 'string' ? Buffer.from(data, 'utf8') : data, temp);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, path);
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
  syncDirectory(dirname(path));
}

/**
 * Writes every byte: a write may take only part of them (a full disk, a file size limit), and
 * the next one then fails with the reason (ENOSPC, EFBIG); renamed short, the file would be cut.
 */
function writeWhole(fd: number, bytes: Uint8Array, path: string): void {
  for (let at = 0; at < bytes.length; ) {
    const written = writeSync(fd, bytes, at, bytes.length - at);
    if (written <= 0) {
      throw Object.assign(new Error(`${path}: wrote ${at} of ${bytes.length} bytes`), { code: 'EIO' });
    }
    at += written;
  }
}

function syncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some file systems refuse fsync on a directory; the rename itself is still atomic.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

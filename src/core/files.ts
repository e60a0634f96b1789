/**
 * Files outside the database (exports, the client's state, the systemd unit, later CA material)
 * are written temp → fsync → rename, so that a reader or a crash sees the old content or the new,
 * never a torn file; secrets get mode 0600 from the first byte.
 */
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";

/** Writes a file so that readers see the old or the new content, never a torn one. */
export function writeFileAtomic(path: string, data: string, mode = 0o600): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  // Created with `mode` from the start (a umask only narrows it): a secret is never readable by others, not even for a moment.
  const fd = openSync(tmp, "wx", mode);
  try {
    const bytes = Buffer.from(data);
    // write(2) may write less than asked; a short write must not become a truncated file.
    for (let written = 0; written < bytes.length;) written += writeSync(fd, bytes, written);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkSync(tmp);
    throw error;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (error) {
    unlinkSync(tmp);
    throw error;
  }
  const dirFd = openSync(dirname(path), "r");
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}

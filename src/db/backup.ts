/** `latchkey backup`: a consistent copy of the SQLite database, never readable by others. */
import { Database } from "bun:sqlite";
import { closeSync, existsSync, fsyncSync, linkSync, openSync, renameSync, rmSync, unlinkSync } from "node:fs";
import { basename, dirname, join } from "node:path";

/** FILE appeared while the copy was being written. */
export class BackupTargetExists extends Error {}

/**
 * The copy holds the receipt signing key, the server secret, password verifiers, enrollment keys
 * and license tokens, so it never exists with a mode wider than 0600: SQLite creates it under
 * umask 077, and under a temporary name that becomes FILE only once the copy is complete and on disk.
 */
export function writeBackup(source: string, target: string): void {
  const tmp = join(dirname(target), `.${basename(target)}.${process.pid}.tmp`);
  const db = new Database(source, { readonly: true });
  try {
    db.run("PRAGMA busy_timeout = 10000");
    const umask = process.umask(0o077);
    try {
      // VACUUM INTO reads one snapshot, so the copy is consistent even while the server writes.
      db.query("VACUUM INTO ?").run(tmp);
    } finally {
      process.umask(umask);
    }
    fsyncPath(tmp);
    publish(tmp, target);
    fsyncPath(dirname(target));
  } catch (error) {
    rmSync(tmp, { force: true });
    throw error;
  } finally {
    db.close();
  }
}

/** Gives the finished copy its name, without replacing a file that appeared in the meantime. */
function publish(tmp: string, target: string): void {
  try {
    linkSync(tmp, target);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST" || existsSync(target))
      throw new BackupTargetExists(`${target} already exists; choose a new file name`);
    // A file system without hard links (FAT, some network shares): rename instead.
    renameSync(tmp, target);
    return;
  }
  unlinkSync(tmp);
}

function fsyncPath(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Notices commits made by other processes (the admin CLI, a second server) through SQLite's
 * `PRAGMA data_version`, so that in-memory caches can be dropped. Reading the pragma takes the
 * database's read lock, which under load costs more than the cached lookups it guards: it is read
 * at most every `everyMs` milliseconds, far shorter than any other process takes to commit and
 * report back.
 */
export class DataVersion {
  private last = -1;
  private checkedAt = -Infinity;

  constructor(
    private readonly read: () => number,
    private readonly everyMs = 20,
  ) {}

  /** True when another connection has committed since the last time this said so. */
  changed(): boolean {
    const now = performance.now();
    if (now - this.checkedAt < this.everyMs) return false;
    this.checkedAt = now;
    const version = this.read();
    if (version === this.last) return false;
    this.last = version;
    return true;
  }
}

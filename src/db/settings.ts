import type { Database } from "bun:sqlite";

/** Key/value settings stored as JSON, read fresh each time so changes by the CLI apply at once. */
export class SettingsStore {
  constructor(private readonly db: Database) {}

  get<T>(key: string): T | undefined {
    const row = this.db.query<{ value: string }, [string]>("SELECT value FROM settings WHERE key = ?").get(key);
    return row === null ? undefined : (JSON.parse(row.value) as T);
  }

  set(key: string, value: unknown): void {
    this.db
      .query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
      .run(key, JSON.stringify(value));
  }

  /** Sets the value only if the key is absent; returns the stored value either way. */
  getOrInit<T>(key: string, init: () => T): T {
    this.db.query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING").run(key, JSON.stringify(init()));
    return this.get<T>(key)!;
  }
}

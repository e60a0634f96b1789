import type { Sql } from "./sql.ts";

/**
 * Whether a registration needs a pre-shared key (woho's `require_auth_key`, false when unset): read
 * by a registration in its own statements (EnrollmentStore.register), so that a change applies to
 * the very next one on every node.
 */
export const REQUIRE_AUTH_KEY = "require_auth_key";

/** Key/value settings stored as JSON, read fresh each time so changes by another process apply at once. */
export class SettingsStore {
  constructor(private readonly sql: Sql) {}

  async get<T>(key: string): Promise<T | undefined> {
    const row = await this.sql.get<{ value: string }>("SELECT value FROM settings WHERE key = ?", [key]);
    return row === null ? undefined : (JSON.parse(row.value) as T);
  }

  async set(key: string, value: unknown): Promise<void> {
    await this.sql.run("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [
      key,
      JSON.stringify(value),
    ]);
  }

  /**
   * Sets the value only if the key is absent; returns the stored value either way. Of several
   * processes starting at once, the first insert wins and every one reads the winner's value.
   */
  async getOrInit<T>(key: string, init: () => T): Promise<T> {
    await this.sql.run("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", [key, JSON.stringify(init())]);
    return (await this.get<T>(key))!;
  }
}

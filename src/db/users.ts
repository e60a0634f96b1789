import type { Sql } from "./sql.ts";

export type Role = "admin" | "viewer";

export interface UserRow {
  id: number;
  username: string;
  role: Role;
  allowed_groups: string;
  password_hash: string;
  scram_salt: string;
  scram_iterations: number;
  scram_stored_key: string;
  scram_server_key: string;
  legacy_salt: string | null;
  legacy_hash: string | null;
  created_at: number;
  password_changed_at: number;
  last_login_at: number | null;
  /** Bumped by every change of password or role: a login verified against an older one is void. */
  credential_version: number;
}

export interface NewUser {
  username: string;
  role: Role;
  allowedGroups: string[];
  passwordHash: string;
  scram: { salt: string; iterations: number; storedKey: string; serverKey: string };
  legacySalt: string | null;
  legacyHash: string | null;
  now: number;
}

/**
 * A name equal to this one ignoring case. Each text matches its backend's unique index on the
 * names ignoring case (SQLite's `username COLLATE NOCASE`, PostgreSQL's `lower(username)`), so
 * that the lookup stays an index search; usernames are ASCII, where both fold alike.
 */
const BY_NAME_IGNORING_CASE = {
  sqlite: "SELECT * FROM users WHERE username = ? COLLATE NOCASE",
  postgres: "SELECT * FROM users WHERE lower(username) = lower(?)",
};

/** Queries over the `users` table. */
export class UserStore {
  constructor(private readonly sql: Sql) {}

  get(username: string): Promise<UserRow | null> {
    return this.sql.get<UserRow>("SELECT * FROM users WHERE username = ?", [username]);
  }

  list(limit: number, offset: number): Promise<UserRow[]> {
    return this.sql.all<UserRow>("SELECT * FROM users ORDER BY username LIMIT ? OFFSET ?", [limit, offset]);
  }

  async count(): Promise<number> {
    return (await this.sql.get<{ n: number }>("SELECT count(*) AS n FROM users"))!.n;
  }

  withLegacyHash(): Promise<UserRow[]> {
    return this.sql.all<UserRow>("SELECT * FROM users WHERE legacy_hash IS NOT NULL ORDER BY username");
  }

  /** The account whose name equals this one ignoring case, if any. */
  getIgnoringCase(username: string): Promise<UserRow | null> {
    return this.sql.get<UserRow>(BY_NAME_IGNORING_CASE[this.sql.dialect], [username]);
  }

  /** Inserts a user; returns false when the username (in any case) is taken. */
  async insert(user: NewUser): Promise<boolean> {
    const changed = await this.sql.run(
      `INSERT INTO users (username, role, allowed_groups, password_hash, scram_salt, scram_iterations,
         scram_stored_key, scram_server_key, legacy_salt, legacy_hash, created_at, password_changed_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
      [
        user.username,
        user.role,
        JSON.stringify(user.allowedGroups),
        user.passwordHash,
        user.scram.salt,
        user.scram.iterations,
        user.scram.storedKey,
        user.scram.serverKey,
        user.legacySalt,
        user.legacyHash,
        user.now,
        user.now,
      ],
    );
    return changed === 1;
  }

  async setPassword(username: string, passwordHash: string, scram: NewUser["scram"], now: number): Promise<boolean> {
    const changed = await this.sql.run(
      `UPDATE users SET password_hash = ?, scram_salt = ?, scram_iterations = ?, scram_stored_key = ?,
         scram_server_key = ?, legacy_salt = NULL, legacy_hash = NULL, password_changed_at = ?,
         credential_version = credential_version + 1
       WHERE username = ?`,
      [passwordHash, scram.salt, scram.iterations, scram.storedKey, scram.serverKey, now, username],
    );
    return changed === 1;
  }

  /** An import with --replace: the file's credentials, role and groups, as one credential change. */
  async replaceFromImport(id: number, user: Omit<NewUser, "username">): Promise<boolean> {
    const changed = await this.sql.run(
      `UPDATE users SET role = ?, allowed_groups = ?, password_hash = ?, scram_salt = ?, scram_iterations = ?,
         scram_stored_key = ?, scram_server_key = ?, legacy_salt = ?, legacy_hash = ?, password_changed_at = ?,
         credential_version = credential_version + 1
       WHERE id = ?`,
      [
        user.role,
        JSON.stringify(user.allowedGroups),
        user.passwordHash,
        user.scram.salt,
        user.scram.iterations,
        user.scram.storedKey,
        user.scram.serverKey,
        user.legacySalt,
        user.legacyHash,
        user.now,
        id,
      ],
    );
    return changed === 1;
  }

  /** A change of role voids logins in flight (credential_version); a change of groups does not. */
  async update(username: string, changes: { role?: Role; allowedGroups?: string[] }): Promise<boolean> {
    const changed = await this.sql.run(
      `UPDATE users SET role = coalesce(?1, role), allowed_groups = coalesce(?2, allowed_groups),
         credential_version = credential_version + CASE WHEN ?1 IS NOT NULL AND ?1 <> role THEN 1 ELSE 0 END
       WHERE username = ?3`,
      [changes.role ?? null, changes.allowedGroups === undefined ? null : JSON.stringify(changes.allowedGroups), username],
    );
    return changed === 1;
  }

  /**
   * Voids every login in flight for the account (as a change of its credentials does), taking its
   * row's write lock until the transaction ends: a session insert waits for the outcome.
   */
  async voidLogins(id: number): Promise<void> {
    await this.sql.run("UPDATE users SET credential_version = credential_version + 1 WHERE id = ?", [id]);
  }

  async touchLogin(id: number, now: number): Promise<void> {
    await this.sql.run("UPDATE users SET last_login_at = ? WHERE id = ?", [now, id]);
  }

  async delete(username: string): Promise<boolean> {
    return (await this.sql.run("DELETE FROM users WHERE username = ?", [username])) === 1;
  }
}

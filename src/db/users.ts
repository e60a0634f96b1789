import type { Database } from "bun:sqlite";

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

/** Queries over the `users` table. */
export class UserStore {
  constructor(private readonly db: Database) {}

  get(username: string): UserRow | null {
    return this.db.query<UserRow, [string]>("SELECT * FROM users WHERE username = ?").get(username);
  }

  list(limit: number, offset: number): UserRow[] {
    return this.db.query<UserRow, [number, number]>("SELECT * FROM users ORDER BY username LIMIT ? OFFSET ?").all(limit, offset);
  }

  count(): number {
    return this.db.query<{ n: number }, []>("SELECT count(*) AS n FROM users").get()!.n;
  }

  withLegacyHash(): UserRow[] {
    return this.db.query<UserRow, []>("SELECT * FROM users WHERE legacy_hash IS NOT NULL ORDER BY username").all();
  }

  /** The account whose name equals this one ignoring case, if any. */
  getIgnoringCase(username: string): UserRow | null {
    return this.db.query<UserRow, [string]>("SELECT * FROM users WHERE username = ? COLLATE NOCASE").get(username);
  }

  /** Inserts a user; returns false when the username (in any case) is taken. */
  insert(user: NewUser): boolean {
    const result = this.db
      .query(
        `INSERT INTO users (username, role, allowed_groups, password_hash, scram_salt, scram_iterations,
           scram_stored_key, scram_server_key, legacy_salt, legacy_hash, created_at, password_changed_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
      )
      .run(
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
      );
    return result.changes === 1;
  }

  setPassword(username: string, passwordHash: string, scram: NewUser["scram"], now: number): boolean {
    const result = this.db
      .query(
        `UPDATE users SET password_hash = ?, scram_salt = ?, scram_iterations = ?, scram_stored_key = ?,
           scram_server_key = ?, legacy_salt = NULL, legacy_hash = NULL, password_changed_at = ?,
           credential_version = credential_version + 1
         WHERE username = ?`,
      )
      .run(passwordHash, scram.salt, scram.iterations, scram.storedKey, scram.serverKey, now, username);
    return result.changes === 1;
  }

  /** An import with --replace: the file's credentials, role and groups, as one credential change. */
  replaceFromImport(id: number, user: Omit<NewUser, "username">): boolean {
    const result = this.db
      .query(
        `UPDATE users SET role = ?, allowed_groups = ?, password_hash = ?, scram_salt = ?, scram_iterations = ?,
           scram_stored_key = ?, scram_server_key = ?, legacy_salt = ?, legacy_hash = ?, password_changed_at = ?,
           credential_version = credential_version + 1
         WHERE id = ?`,
      )
      .run(
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
      );
    return result.changes === 1;
  }

  /** A change of role voids logins in flight (credential_version); a change of groups does not. */
  update(username: string, changes: { role?: Role; allowedGroups?: string[] }): boolean {
    const result = this.db
      .query(
        `UPDATE users SET role = coalesce(?1, role), allowed_groups = coalesce(?2, allowed_groups),
           credential_version = credential_version + (?1 IS NOT NULL AND ?1 IS NOT role)
         WHERE username = ?3`,
      )
      .run(changes.role ?? null, changes.allowedGroups === undefined ? null : JSON.stringify(changes.allowedGroups), username);
    return result.changes === 1;
  }

  touchLogin(id: number, now: number): void {
    this.db.query("UPDATE users SET last_login_at = ? WHERE id = ?").run(now, id);
  }

  delete(username: string): boolean {
    return this.db.query("DELETE FROM users WHERE username = ?").run(username).changes === 1;
  }
}

import type { Sql } from "./sql.ts";
import type { Role } from "./users.ts";

export interface SessionRow {
  id: string;
  user_id: number;
  username: string;
  role: Role;
  allowed_groups: string;
  method: string;
  created_at: number;
  last_used_at: number;
  expires_at: number;
}

/**
 * The ids, given as one JSON array. On PostgreSQL the parameter is text cast to jsonb: one typed
 * jsonb would be JSON-encoded again by the client (a string, not an array).
 */
const EXISTING = {
  sqlite: "SELECT value AS id FROM json_each(?) WHERE value IN (SELECT id FROM sessions)",
  postgres: "SELECT value AS id FROM jsonb_array_elements_text(CAST(? AS text)::jsonb) WHERE value IN (SELECT id FROM sessions)",
};

/**
 * SQLite runs one writer at a time, so the change either committed before the insert or waits
 * for it. On PostgreSQL the user's row is locked (FOR SHARE) so that the insert waits for a change
 * in progress and then sees its outcome (READ COMMITTED re-reads a locked row that changed); a
 * plain read would see the row as it was, and its session would slip past the change's deletion.
 */
const INSERT_IF_CURRENT = {
  sqlite: `INSERT INTO sessions (id, user_id, method, address, created_at, last_used_at, expires_at)
           SELECT ?, id, ?, ?, ?, ?, ? FROM users WHERE id = ? AND credential_version = ?`,
  postgres: `INSERT INTO sessions (id, user_id, method, address, created_at, last_used_at, expires_at)
             SELECT ?, id, ?, ?, ?, ?, ? FROM users WHERE id = ? AND credential_version = ? FOR SHARE`,
};

/** The stored last use only moves forward: a late write-back never winds it back. */
const TOUCH = {
  sqlite: "UPDATE sessions SET last_used_at = max(last_used_at, ?) WHERE id = ?",
  postgres: "UPDATE sessions SET last_used_at = GREATEST(last_used_at, ?) WHERE id = ?",
};

/** Queries over the `sessions` table. Session ids are hashes of the tokens, never the tokens. */
export class SessionStore {
  constructor(private readonly sql: Sql) {}

  /**
   * Inserts a session only while its user still exists with the credential version the login
   * verified against: one statement, so that a concurrent password change, role change or
   * deletion either comes first (no session) or after (and then ends it). False when refused.
   */
  async insertIfCurrent(row: {
    id: string;
    userId: number;
    credentialVersion: number;
    method: string;
    address: string | null;
    now: number;
    expiresAt: number;
  }): Promise<boolean> {
    const changed = await this.sql.run(INSERT_IF_CURRENT[this.sql.dialect], [
      row.id,
      row.method,
      row.address,
      row.now,
      row.now,
      row.expiresAt,
      row.userId,
      row.credentialVersion,
    ]);
    return changed === 1;
  }

  get(id: string): Promise<SessionRow | null> {
    return this.sql.get<SessionRow>(
      `SELECT s.id, s.user_id, u.username, u.role, u.allowed_groups, s.method, s.created_at,
              s.last_used_at, s.expires_at
       FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?`,
      [id],
    );
  }

  /** The subset of `ids` that still exist. */
  async existing(ids: string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const rows = await this.sql.all<{ id: string }>(EXISTING[this.sql.dialect], [JSON.stringify(ids)]);
    return new Set(rows.map((r) => r.id));
  }

  async touch(id: string, now: number): Promise<void> {
    await this.sql.run(TOUCH[this.sql.dialect], [now, id]);
  }

  async delete(id: string): Promise<boolean> {
    return (await this.sql.run("DELETE FROM sessions WHERE id = ?", [id])) === 1;
  }

  /** Deletes every session of a user; returns their ids (one statement: none slips in between). */
  async deleteForUser(userId: number): Promise<string[]> {
    const rows = await this.sql.all<{ id: string }>("DELETE FROM sessions WHERE user_id = ? RETURNING id", [userId]);
    return rows.map((r) => r.id);
  }

  /** Deletes the sessions past either limit; returns their ids. */
  async deleteExpired(now: number, idleMs: number): Promise<string[]> {
    const rows = await this.sql.all<{ id: string }>("DELETE FROM sessions WHERE expires_at <= ? OR last_used_at + ? <= ? RETURNING id", [
      now,
      idleMs,
      now,
    ]);
    return rows.map((r) => r.id);
  }
}

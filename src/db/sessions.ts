import type { Database } from "bun:sqlite";
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

/** Queries over the `sessions` table. Session ids are hashes of the tokens, never the tokens. */
export class SessionStore {
  private readonly versionQuery;

  constructor(private readonly db: Database) {
    this.versionQuery = db.query<{ data_version: number }, []>("PRAGMA data_version");
  }

  /** Changes whenever another connection (another process) commits to the database. */
  dataVersion(): number {
    return this.versionQuery.get()!.data_version;
  }

  /**
   * Inserts a session only while its user still exists with the credential version the login
   * verified against: one statement, so that a concurrent password change, role change or
   * deletion either comes first (no session) or after (and then ends it). False when refused.
   */
  insertIfCurrent(row: {
    id: string;
    userId: number;
    credentialVersion: number;
    method: string;
    address: string | null;
    now: number;
    expiresAt: number;
  }): boolean {
    return (
      this.db
        .query(
          `INSERT INTO sessions (id, user_id, method, address, created_at, last_used_at, expires_at)
           SELECT ?, id, ?, ?, ?, ?, ? FROM users WHERE id = ? AND credential_version = ?`,
        )
        .run(row.id, row.method, row.address, row.now, row.now, row.expiresAt, row.userId, row.credentialVersion).changes === 1
    );
  }

  get(id: string): SessionRow | null {
    return this.db
      .query<SessionRow, [string]>(
        `SELECT s.id, s.user_id, u.username, u.role, u.allowed_groups, s.method, s.created_at,
                s.last_used_at, s.expires_at
         FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?`,
      )
      .get(id);
  }

  /** The subset of `ids` that still exist. */
  existing(ids: string[]): Set<string> {
    if (ids.length === 0) return new Set();
    const rows = this.db
      .query<{ id: string }, [string]>("SELECT value AS id FROM json_each(?) WHERE value IN (SELECT id FROM sessions)")
      .all(JSON.stringify(ids));
    return new Set(rows.map((r) => r.id));
  }

  touch(id: string, now: number): void {
    this.db.query("UPDATE sessions SET last_used_at = max(last_used_at, ?) WHERE id = ?").run(now, id);
  }

  delete(id: string): boolean {
    return this.db.query("DELETE FROM sessions WHERE id = ?").run(id).changes === 1;
  }

  idsForUser(userId: number): string[] {
    return this.db
      .query<{ id: string }, [number]>("SELECT id FROM sessions WHERE user_id = ?")
      .all(userId)
      .map((r) => r.id);
  }

  deleteForUser(userId: number): number {
    return this.db.query("DELETE FROM sessions WHERE user_id = ?").run(userId).changes;
  }

  /** Deletes the sessions past either limit; returns their ids. */
  deleteExpired(now: number, idleMs: number): string[] {
    return this.db
      .query<{ id: string }, [number, number, number]>("DELETE FROM sessions WHERE expires_at <= ? OR last_used_at + ? <= ? RETURNING id")
      .all(now, idleMs, now)
      .map((r) => r.id);
  }
}

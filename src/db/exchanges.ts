import type { Dialect, Sql } from "./sql.ts";

/** Sign-ins of more than one request (migration 0013): SCRAM exchanges and wsauth nonces. */
export type ExchangeKind = "scram" | "legacy";

export interface PendingExchange {
  username: string;
  address: string | null;
  /** The sign-in's own state between its steps, as JSON. */
  state: string;
}

/**
 * An address's exchanges past its newest `?4`, which the one being added then joins. On PostgreSQL,
 * rows another start is evicting at the same moment are skipped rather than waited for: a flood of
 * starts from one address does not queue on its oldest row.
 */
const EVICT: Record<Dialect, string> = {
  sqlite: `DELETE FROM sign_in_exchanges WHERE kind = ?1 AND id IN (
    SELECT id FROM sign_in_exchanges WHERE kind = ?2 AND address = ?3 ORDER BY expires_at DESC, id DESC LIMIT -1 OFFSET ?4)`,
  postgres: `DELETE FROM sign_in_exchanges WHERE kind = ?1 AND id IN (
    SELECT id FROM sign_in_exchanges WHERE kind = ?2 AND address = ?3 ORDER BY expires_at DESC, id DESC OFFSET ?4 FOR UPDATE SKIP LOCKED)`,
};

/**
 * Queries over `sign_in_exchanges`: a sign-in's first step is written by the process that
 * answered it, and its last takes it with one conditional DELETE, whichever process or node
 * answers that: of two finishes of one exchange, exactly one gets it.
 */
export class ExchangeStore {
  constructor(private readonly sql: Sql) {}

  /**
   * Records an exchange. An address already holding `perAddress` unfinished ones of this kind
   * loses its oldest (no address can push out another's); with `total` unfinished in all, nothing
   * is written and the answer is false.
   */
  add(
    kind: ExchangeKind,
    id: string,
    entry: PendingExchange,
    expiresAt: number,
    now: number,
    limits: { perAddress: number; total: number },
  ): Promise<boolean> {
    const address = entry.address ?? "";
    return this.sql.transaction(
      async () => {
        await this.sql.run(EVICT[this.sql.dialect], [kind, kind, address, limits.perAddress - 1]);
        const added = await this.sql.run(
          `INSERT INTO sign_in_exchanges (kind, id, username, address, state, expires_at) SELECT ?, ?, ?, ?, ?, ?
           WHERE (SELECT count(*) FROM (SELECT 1 FROM sign_in_exchanges WHERE kind = ? AND expires_at > ? LIMIT ?) t) < ?`,
          [kind, id, entry.username, address, entry.state, expiresAt, kind, now, limits.total, limits.total],
        );
        return added === 1;
      },
      // An exchange lost in a power cut is a sign-in to start again.
      { durable: false },
    );
  }

  /** The exchange, removed (single use, whatever comes of it); null when unknown or expired. */
  async take(kind: ExchangeKind, id: string, now: number): Promise<PendingExchange | null> {
    const row = await this.sql.get<{ username: string; address: string; state: string; expires_at: number }>(
      "DELETE FROM sign_in_exchanges WHERE kind = ? AND id = ? RETURNING username, address, state, expires_at",
      [kind, id],
    );
    if (row === null || row.expires_at <= now) return null;
    return { username: row.username, address: row.address === "" ? null : row.address, state: row.state };
  }

  /** Ends an account's unfinished exchanges (its credentials changed). */
  async forgetUser(username: string): Promise<void> {
    await this.sql.run("DELETE FROM sign_in_exchanges WHERE username = ?", [username]);
  }

  /** Forgets exchanges past their time; returns how many. */
  sweep(now: number): Promise<number> {
    return this.sql.run("DELETE FROM sign_in_exchanges WHERE expires_at <= ?", [now]);
  }
}

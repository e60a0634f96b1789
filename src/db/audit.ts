import type { Sql } from "./sql.ts";

export type Outcome = "success" | "failure" | "denied";

export interface AuditRow {
  id: number;
  at: number;
  actor: string | null;
  address: string | null;
  action: string;
  target: string | null;
  outcome: Outcome;
  reason: string | null;
}

/** An entry about to be written. */
export type NewAuditRow = Omit<AuditRow, "id">;

/**
 * Writes an audit entry (in the caller's transaction when there is one): AuditStore's, and that
 * of other stores that write one with the change it records.
 */
export async function insertAuditRow(sql: Sql, entry: NewAuditRow): Promise<void> {
  await sql.run("INSERT INTO audit (at, actor, address, action, target, outcome, reason) VALUES (?, ?, ?, ?, ?, ?, ?)", [
    entry.at,
    entry.actor,
    entry.address,
    entry.action,
    entry.target,
    entry.outcome,
    entry.reason,
  ]);
}

export interface AuditFilter {
  actor?: string;
  action?: string;
  outcome?: Outcome;
  since?: number;
  until?: number;
}

/** The append-only audit log. */
export class AuditStore {
  constructor(private readonly sql: Sql) {}

  insert(entry: NewAuditRow): Promise<void> {
    return insertAuditRow(this.sql, entry);
  }

  private where(filter: AuditFilter): { sql: string; params: (string | number)[] } {
    const clauses: string[] = [];
    const params: (string | number)[] = [];
    if (filter.actor !== undefined) (clauses.push("actor = ?"), params.push(filter.actor));
    if (filter.action !== undefined) (clauses.push("action = ?"), params.push(filter.action));
    if (filter.outcome !== undefined) (clauses.push("outcome = ?"), params.push(filter.outcome));
    if (filter.since !== undefined) (clauses.push("at >= ?"), params.push(filter.since));
    if (filter.until !== undefined) (clauses.push("at < ?"), params.push(filter.until));
    return { sql: clauses.length ? `WHERE ${clauses.join(" AND ")}` : "", params };
  }

  list(filter: AuditFilter, limit: number, offset: number): Promise<AuditRow[]> {
    const { sql, params } = this.where(filter);
    return this.sql.all<AuditRow>(`SELECT * FROM audit ${sql} ORDER BY id DESC LIMIT ? OFFSET ?`, [...params, limit, offset]);
  }

  /** Every matching entry, oldest first, read a page at a time (keyset on id). */
  async *iterate(filter: AuditFilter, pageSize = 1000): AsyncGenerator<AuditRow> {
    const { sql, params } = this.where(filter);
    const after = sql === "" ? "WHERE id > ?" : `${sql} AND id > ?`;
    let last = 0;
    for (;;) {
      const page = await this.sql.all<AuditRow>(`SELECT * FROM audit ${after} ORDER BY id LIMIT ?`, [...params, last, pageSize]);
      yield* page;
      if (page.length < pageSize) return;
      last = page[page.length - 1]!.id;
    }
  }

  async count(filter: AuditFilter): Promise<number> {
    const { sql, params } = this.where(filter);
    return (await this.sql.get<{ n: number }>(`SELECT count(*) AS n FROM audit ${sql}`, params))!.n;
  }
}

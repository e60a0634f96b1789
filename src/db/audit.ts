import type { Database } from "bun:sqlite";

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

export interface AuditFilter {
  actor?: string;
  action?: string;
  outcome?: Outcome;
  since?: number;
  until?: number;
}

/** The append-only audit log. */
export class AuditStore {
  constructor(private readonly db: Database) {}

  insert(entry: Omit<AuditRow, "id">): void {
    this.db
      .query("INSERT INTO audit (at, actor, address, action, target, outcome, reason) VALUES (?, ?, ?, ?, ?, ?, ?)")
      .run(entry.at, entry.actor, entry.address, entry.action, entry.target, entry.outcome, entry.reason);
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

  list(filter: AuditFilter, limit: number, offset: number): AuditRow[] {
    const { sql, params } = this.where(filter);
    return this.db
      .query<AuditRow, (string | number)[]>(`SELECT * FROM audit ${sql} ORDER BY id DESC LIMIT ? OFFSET ?`)
      .all(...params, limit, offset);
  }

  iterate(filter: AuditFilter): IterableIterator<AuditRow> {
    const { sql, params } = this.where(filter);
    return this.db.query<AuditRow, (string | number)[]>(`SELECT * FROM audit ${sql} ORDER BY id`).iterate(...params);
  }

  count(filter: AuditFilter): number {
    const { sql, params } = this.where(filter);
    return this.db.query<{ n: number }, (string | number)[]>(`SELECT count(*) AS n FROM audit ${sql}`).get(...params)!.n;
  }
}

import type { AuditFilter, AuditRow, AuditStore, NewAuditRow, Outcome } from "../db/audit.ts";
import type { Clock } from "./clock.ts";

export interface AuditEntry {
  actor: string | null;
  address: string | null;
  action: string;
  target?: string | null;
  outcome: Outcome;
  reason?: string | null;
}

export interface AuditQuery {
  actor?: string | undefined;
  action?: string | undefined;
  outcome?: Outcome | undefined;
  /** ISO 8601 */
  since?: string | undefined;
  until?: string | undefined;
}

export interface AuditView extends Omit<AuditRow, "at"> {
  at: string;
}

function toAuditView(row: AuditRow): AuditView {
  return { ...row, at: new Date(row.at).toISOString() };
}

function toFilter(query: AuditQuery): AuditFilter {
  const filter: AuditFilter = {};
  if (query.actor !== undefined) filter.actor = query.actor;
  if (query.action !== undefined) filter.action = query.action;
  if (query.outcome !== undefined) filter.outcome = query.outcome;
  if (query.since !== undefined) filter.since = Date.parse(query.since);
  if (query.until !== undefined) filter.until = Date.parse(query.until);
  return filter;
}

/**
 * Records every authentication decision and every admin change. Callers pass names and ids,
 * never secrets; `maskSecret` (secrets.ts) is there for the few places that must say which secret was used.
 */
export class Audit {
  private listeners: ((entry: AuditEntry) => void)[] = [];

  constructor(
    private readonly store: AuditStore,
    private readonly clock: Clock,
  ) {}

  /** Also hands every entry to `listener` (the server's log of security events). */
  onRecord(listener: (entry: AuditEntry) => void): void {
    this.listeners.push(listener);
  }

  /** Written in the caller's transaction when there is one. */
  async record(entry: AuditEntry): Promise<void> {
    this.announce(entry);
    await this.store.insert(this.row(entry));
  }

  /** The row `entry` is stored as, for a store that writes it with the change it records (then `announce` it). */
  row(entry: AuditEntry): NewAuditRow {
    return {
      at: this.clock(),
      actor: entry.actor,
      address: entry.address,
      action: entry.action,
      target: entry.target ?? null,
      outcome: entry.outcome,
      reason: entry.reason ?? null,
    };
  }

  /** Hands an entry a store wrote (see `row`) to the listeners, as `record` does. */
  announce(entry: AuditEntry): void {
    for (const listener of this.listeners) listener(entry);
  }

  /** A page of the log, newest first. */
  async search(query: AuditQuery & { limit: number; offset: number }): Promise<{ items: AuditView[]; total: number }> {
    const filter = toFilter(query);
    const [items, total] = await Promise.all([this.store.list(filter, query.limit, query.offset), this.store.count(filter)]);
    return { items: items.map(toAuditView), total };
  }

  /** Every matching entry, oldest first, for a JSON-lines export. */
  async *export(query: AuditQuery): AsyncGenerator<AuditView> {
    for await (const row of this.store.iterate(toFilter(query))) yield toAuditView(row);
  }
}

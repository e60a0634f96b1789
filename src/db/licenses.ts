import { insertAuditRow, type NewAuditRow } from "./audit.ts";
import type { Dialect, Sql } from "./sql.ts";

export interface AppRow {
  id: number;
  name: string;
  support_message: string;
  created_at: number;
}

export interface LicenseRow {
  id: number;
  app_id: number;
  token: string;
  token_hash: string;
  activations_allowed: number;
  activations_used: number;
  enabled: number;
  memo: string;
  expires_at: number | null;
  created_at: number;
  total_activations: number;
  last_activation_at: number | null;
  last_activation_address: string | null;
}

/** A key's seats as a seat change leaves them, and its expiry (what a receipt is signed with). */
export type Seats = Pick<LicenseRow, "activations_allowed" | "activations_used" | "expires_at">;

/** A license with its check counters and its application's name and support message. */
export interface LicenseWithApp extends LicenseRow {
  total_checks: number;
  last_check_at: number | null;
  last_check_address: string | null;
  app_name: string;
  support_message: string;
}

/** What a LicenseWithApp selects beyond the license's own columns. */
const WITH_APP = `SELECT l.*, coalesce(c.total, 0) AS total_checks, c.last_at AS last_check_at, c.last_address AS last_check_address,
  a.name AS app_name, a.support_message
  FROM licenses l JOIN applications a ON a.id = l.app_id LEFT JOIN license_checks c ON c.license_id = l.id`;

export interface ActivationRow {
  id: number;
  license_id: number;
  hwid: string;
  machine: string | null;
  user: string | null;
  address: string | null;
  created_at: number;
  last_check_at: number | null;
}

export interface LicenseFilter {
  appId?: number | undefined;
  enabled?: boolean | undefined;
  /** Matches the memo (substring) or the token (prefix). */
  search?: string | undefined;
  /** False: `search` matches the memo only (for callers who see tokens masked). */
  matchTokens?: boolean | undefined;
}

// Statements whose text differs between the dialects. `"user"` is quoted everywhere: unquoted, it
// is current_user on PostgreSQL.

/** Applications by name in byte order, as SQLite sorts text (PostgreSQL would follow the locale). */
const APPS: Record<Dialect, string> = {
  sqlite: `SELECT a.*, (SELECT count(*) FROM licenses l WHERE l.app_id = a.id) AS licenses
    FROM applications a ORDER BY a.name LIMIT ? OFFSET ?`,
  postgres: `SELECT a.*, (SELECT count(*) FROM licenses l WHERE l.app_id = a.id) AS licenses
    FROM applications a ORDER BY a.name COLLATE "C" LIMIT ? OFFSET ?`,
};

/** Case-insensitive substring of the memo. */
const MEMO_MATCH: Record<Dialect, string> = {
  sqlite: "instr(lower(l.memo), lower(?)) > 0",
  postgres: "strpos(lower(l.memo), lower(?)) > 0",
};

/**
 * The row of a key whose seats are about to change. On PostgreSQL it is locked (as an UPDATE of
 * it would), so that every transaction that changes a key's seats and activations takes the key's
 * row first and the rest after: they queue on the key instead of deadlocking on its activations.
 * On SQLite the transaction already holds the database's write lock.
 */
const LOCK_LICENSE: Record<Dialect, string> = {
  sqlite: "SELECT id FROM licenses WHERE id = ?",
  postgres: "SELECT id FROM licenses WHERE id = ? FOR NO KEY UPDATE",
};

/** An application about to be deleted: on PostgreSQL, locked against keys being cut for it meanwhile. */
const LOCK_APP: Record<Dialect, string> = {
  sqlite: "SELECT id FROM applications WHERE id = ?",
  postgres: "SELECT id FROM applications WHERE id = ? FOR UPDATE",
};

/**
 * Batched check counters of keys, from a JSON array of {id, checks, at, address}, in id order (on
 * PostgreSQL two servers flushing the same keys then lock their rows in the same order). Going
 * through the licenses table skips a key deleted since its checks were counted. On PostgreSQL the
 * parameter is text cast to jsonb: a parameter typed jsonb would be JSON-encoded again by the client.
 */
const FLUSH_KEYS: Record<Dialect, string> = {
  sqlite: `INSERT INTO license_checks (license_id, total, last_at, last_address)
    SELECT l.id, j.value ->> '$.checks', j.value ->> '$.at', j.value ->> '$.address'
    FROM json_each(?) j JOIN licenses l ON l.id = j.value ->> '$.id' WHERE true ORDER BY l.id
    ON CONFLICT (license_id) DO UPDATE SET total = license_checks.total + excluded.total,
      last_at = max(coalesce(license_checks.last_at, 0), excluded.last_at), last_address = excluded.last_address`,
  postgres: `INSERT INTO license_checks (license_id, total, last_at, last_address)
    SELECT l.id, (j.value ->> 'checks')::bigint, (j.value ->> 'at')::bigint, j.value ->> 'address'
    FROM jsonb_array_elements(CAST(? AS text)::jsonb) j JOIN licenses l ON l.id = (j.value ->> 'id')::bigint ORDER BY l.id
    ON CONFLICT (license_id) DO UPDATE SET total = license_checks.total + excluded.total,
      last_at = GREATEST(coalesce(license_checks.last_at, 0), excluded.last_at), last_address = excluded.last_address`,
};

/** PostgreSQL only: the activations a flush updates, locked in id order first (an UPDATE … FROM has no order). */
const LOCK_MACHINES = `SELECT a.id FROM activations a
  WHERE a.id IN (SELECT (value ->> 'id')::bigint FROM jsonb_array_elements(CAST(? AS text)::jsonb))
  ORDER BY a.id FOR NO KEY UPDATE`;

/** Batched last-check times of machines, from a JSON array of {id, at}; an activation deleted meanwhile matches no row. */
const FLUSH_MACHINES: Record<Dialect, string> = {
  sqlite: `UPDATE activations SET last_check_at = max(coalesce(last_check_at, 0), j.value ->> '$.at')
    FROM json_each(?) j WHERE activations.id = j.value ->> '$.id'`,
  postgres: `UPDATE activations a SET last_check_at = GREATEST(coalesce(a.last_check_at, 0), (j.value ->> 'at')::bigint)
    FROM jsonb_array_elements(CAST(? AS text)::jsonb) j WHERE a.id = (j.value ->> 'id')::bigint`,
};

/** A machine about to activate a key. */
export interface MachineActivation {
  licenseId: number;
  hwid: string;
  machine: string | null;
  user: string | null;
  address: string | null;
  now: number;
}

/** What an activation came to: a new seat, a machine that had one, no seat left, or no such key (deleted meanwhile). */
export type SeatOutcome = { kind: "new"; seats: Seats } | { kind: "again"; seats: Seats } | { kind: "full" } | { kind: "gone" };

/** Thrown inside an activation's transaction when no seat is left, so that it rolls back: nothing is written. */
const NO_SEAT = new Error("no seat left");

/** True for PostgreSQL's unique_violation (SQLSTATE 23505). */
function uniqueViolation(error: unknown): boolean {
  return (error as { errno?: unknown } | null)?.errno === "23505";
}

/**
 * An activation's transaction on SQLite: durable when it returns, but the write lock is let go
 * before the disk write, which is shared with the transactions committed meanwhile (Sql's
 * `releaseBeforeFlush`).
 */
const ACTIVATION = { releaseBeforeFlush: true } as const;

/** Queries over applications, licenses and activations. */
export class LicenseStore {
  constructor(private readonly sql: Sql) {}

  // Applications

  async insertApp(name: string, supportMessage: string, now: number): Promise<number | null> {
    const row = await this.sql.get<{ id: number }>(
      "INSERT INTO applications (name, support_message, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
      [name, supportMessage, now],
    );
    return row?.id ?? null;
  }

  app(id: number): Promise<AppRow | null> {
    return this.sql.get<AppRow>("SELECT * FROM applications WHERE id = ?", [id]);
  }

  appByName(name: string): Promise<AppRow | null> {
    return this.sql.get<AppRow>("SELECT * FROM applications WHERE lower(name) = lower(?)", [name]);
  }

  apps(limit: number, offset: number): Promise<(AppRow & { licenses: number })[]> {
    return this.sql.all<AppRow & { licenses: number }>(APPS[this.sql.dialect], [limit, offset]);
  }

  async countApps(): Promise<number> {
    return (await this.sql.get<{ n: number }>("SELECT count(*) AS n FROM applications"))!.n;
  }

  /** Returns false when the new name is taken by another application (or the application is gone). */
  async updateApp(id: number, changes: { name?: string | undefined; supportMessage?: string | undefined }): Promise<boolean> {
    const name = changes.name ?? null;
    try {
      const changed = await this.sql.run(
        `UPDATE applications SET name = coalesce(?1, name), support_message = coalesce(?2, support_message)
         WHERE id = ?3 AND (CAST(?1 AS text) IS NULL
           OR NOT EXISTS (SELECT 1 FROM applications o WHERE o.id <> ?3 AND lower(o.name) = lower(?1)))`,
        [name, changes.supportMessage ?? null, id],
      );
      return changed === 1;
    } catch (error) {
      // PostgreSQL: another rename to the same name committed after this statement's snapshot.
      if (uniqueViolation(error)) return false;
      throw error;
    }
  }

  async deleteApp(id: number): Promise<boolean> {
    return (await this.sql.run("DELETE FROM applications WHERE id = ?", [id])) === 1;
  }

  /** Locks the application's row until the transaction ends (PostgreSQL); false when it is gone. */
  async lockApp(id: number): Promise<boolean> {
    return (await this.sql.get(LOCK_APP[this.sql.dialect], [id])) !== null;
  }

  async licensesOfApp(id: number): Promise<number> {
    return (await this.sql.get<{ n: number }>("SELECT count(*) AS n FROM licenses WHERE app_id = ?", [id]))!.n;
  }

  // Licenses

  async insertLicense(l: {
    appId: number;
    token: string;
    tokenHash: string;
    allowed: number;
    memo: string;
    expiresAt: number | null;
    now: number;
  }): Promise<number> {
    const row = await this.sql.get<{ id: number }>(
      `INSERT INTO licenses (app_id, token, token_hash, activations_allowed, memo, expires_at, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`,
      [l.appId, l.token, l.tokenHash, l.allowed, l.memo, l.expiresAt, l.now],
    );
    return row!.id;
  }

  /** No join on this path (a check's cache miss): a join costs several times the single-table read. */
  byTokenHash(hash: string): Promise<LicenseRow | null> {
    return this.sql.get<LicenseRow>("SELECT * FROM licenses WHERE token_hash = ?", [hash]);
  }

  license(id: number): Promise<LicenseWithApp | null> {
    return this.sql.get<LicenseWithApp>(`${WITH_APP} WHERE l.id = ?`, [id]);
  }

  private where(filter: LicenseFilter): { sql: string; params: (string | number)[] } {
    const clauses: string[] = [];
    const params: (string | number)[] = [];
    if (filter.appId !== undefined) (clauses.push("l.app_id = ?"), params.push(filter.appId));
    if (filter.enabled !== undefined) (clauses.push("l.enabled = ?"), params.push(filter.enabled ? 1 : 0));
    if (filter.search !== undefined && filter.search !== "") {
      const memo = MEMO_MATCH[this.sql.dialect];
      if (filter.matchTokens === false) (clauses.push(memo), params.push(filter.search));
      else {
        // Tokens are upper case: the upper-cased prefix matches on both backends (LIKE is case-sensitive on PostgreSQL).
        clauses.push(`(${memo} OR l.token LIKE ? ESCAPE '\\')`);
        params.push(filter.search, filter.search.toUpperCase().replace(/[\\%_]/g, (c) => `\\${c}`) + "%");
      }
    }
    return { sql: clauses.length ? `WHERE ${clauses.join(" AND ")}` : "", params };
  }

  licenses(filter: LicenseFilter, limit: number, offset: number): Promise<LicenseWithApp[]> {
    const { sql, params } = this.where(filter);
    return this.sql.all<LicenseWithApp>(`${WITH_APP} ${sql} ORDER BY l.id DESC LIMIT ? OFFSET ?`, [...params, limit, offset]);
  }

  async countLicenses(filter: LicenseFilter): Promise<number> {
    const { sql, params } = this.where(filter);
    return (await this.sql.get<{ n: number }>(`SELECT count(*) AS n FROM licenses l ${sql}`, params))!.n;
  }

  async updateLicense(
    id: number,
    changes: {
      enabled?: boolean | undefined;
      memo?: string | undefined;
      allowed?: number | undefined;
      expiresAt?: number | null | undefined;
    },
  ): Promise<boolean> {
    const changed = await this.sql.run(
      `UPDATE licenses SET enabled = coalesce(?, enabled), memo = coalesce(?, memo),
         activations_allowed = coalesce(?, activations_allowed),
         expires_at = CASE WHEN ? = 1 THEN CAST(? AS bigint) ELSE expires_at END
       WHERE id = ?`,
      [
        changes.enabled === undefined ? null : changes.enabled ? 1 : 0,
        changes.memo ?? null,
        changes.allowed ?? null,
        changes.expiresAt === undefined ? 0 : 1,
        changes.expiresAt ?? null,
        id,
      ],
    );
    return changed === 1;
  }

  async deleteLicense(id: number): Promise<boolean> {
    return (await this.sql.run("DELETE FROM licenses WHERE id = ?", [id])) === 1;
  }

  /**
   * A machine's activation of a key, in one transaction: the key locked first (see LOCK_LICENSE),
   * the conditional INSERT deciding whether the machine is new, the conditional UPDATE whether a
   * seat is left for it, and the outcome's audit entry written with it. Durable when this returns,
   * but the lock is let go before the disk write, so that a key's activations do not queue behind
   * each other's round trips and disk writes: on PostgreSQL the key's row (one call to
   * latchkey_activate, migration 0012, then Sql.flush), on SQLite the database's write lock
   * (`releaseBeforeFlush`). With no seat left nothing is written ("full").
   */
  async activateMachine(a: MachineActivation, audit: { newSeat: NewAuditRow; again: NewAuditRow }): Promise<SeatOutcome> {
    if (this.sql.dialect === "postgres") {
      const row = (await this.sql.get<Seats & { outcome: SeatOutcome["kind"] }>(
        "SELECT * FROM latchkey_activate(?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [a.licenseId, a.hwid, a.machine, a.user, a.address, a.now, audit.newSeat.at, audit.newSeat.reason, audit.again.reason],
      ))!;
      if (row.outcome !== "new" && row.outcome !== "again") return { kind: row.outcome };
      await this.sql.flush();
      const seats = { activations_allowed: row.activations_allowed, activations_used: row.activations_used, expires_at: row.expires_at };
      return { kind: row.outcome, seats };
    }
    return this.sql
      .transaction(async (): Promise<SeatOutcome> => {
        if (!(await this.lockLicense(a.licenseId))) return { kind: "gone" };
        if ((await this.insertActivation(a)) === null) {
          await this.touchActivation(a.licenseId, a.hwid, a.machine, a.user, a.address);
          const seats = await this.recordReactivation(a.licenseId, a.now, a.address);
          await insertAuditRow(this.sql, audit.again);
          // The key is locked: it is there.
          return { kind: "again", seats: seats! };
        }
        const seats = await this.takeSeat(a.licenseId, a.now, a.address);
        // No seat left: the activation just inserted is rolled back with the transaction.
        if (seats === null) throw NO_SEAT;
        await insertAuditRow(this.sql, audit.newSeat);
        return { kind: "new", seats };
      }, ACTIVATION)
      .catch((error: unknown): SeatOutcome => {
        if (error === NO_SEAT) return { kind: "full" };
        throw error;
      });
  }

  /**
   * Locks the key's row until the transaction ends (PostgreSQL; see LOCK_LICENSE): the first
   * statement of every transaction that changes the key's seats. False when the key is gone.
   */
  async lockLicense(id: number): Promise<boolean> {
    return (await this.sql.get(LOCK_LICENSE[this.sql.dialect], [id])) !== null;
  }

  // Activations

  activation(licenseId: number, hwid: string): Promise<ActivationRow | null> {
    return this.sql.get<ActivationRow>("SELECT * FROM activations WHERE license_id = ? AND hwid = ?", [licenseId, hwid]);
  }

  activations(licenseId: number): Promise<ActivationRow[]> {
    return this.sql.all<ActivationRow>("SELECT * FROM activations WHERE license_id = ? ORDER BY id", [licenseId]);
  }

  /**
   * Records the machine's activation unless it has one already: the conditional INSERT decides
   * (on PostgreSQL a racing insert of the same machine waits for the first and then does nothing).
   * Returns the new activation's id, or null when the machine already holds a seat.
   */
  private async insertActivation(a: MachineActivation): Promise<number | null> {
    const row = await this.sql.get<{ id: number }>(
      `INSERT INTO activations (license_id, hwid, machine, "user", address, created_at) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (license_id, hwid) DO NOTHING RETURNING id`,
      [a.licenseId, a.hwid, a.machine, a.user, a.address, a.now],
    );
    return row?.id ?? null;
  }

  /**
   * Takes a seat: the single conditional UPDATE decides, so concurrent activations can never
   * exceed the allowance (on PostgreSQL a racing UPDATE waits for the row and re-checks the
   * condition on the committed count). Returns the key's seats after it, or null when no seat is left.
   */
  private takeSeat(licenseId: number, now: number, address: string | null): Promise<Seats | null> {
    return this.sql.get<Seats>(
      `UPDATE licenses SET activations_used = activations_used + 1, total_activations = total_activations + 1,
         last_activation_at = ?, last_activation_address = ?
       WHERE id = ? AND (activations_allowed = -1 OR activations_used < activations_allowed)
       RETURNING activations_allowed, activations_used, expires_at`,
      [now, address, licenseId],
    );
  }

  /** A machine that already holds a seat activated again: counted, no seat taken. Returns the key's seats (null: key gone). */
  private recordReactivation(licenseId: number, now: number, address: string | null): Promise<Seats | null> {
    return this.sql.get<Seats>(
      `UPDATE licenses SET total_activations = total_activations + 1, last_activation_at = ?, last_activation_address = ? WHERE id = ?
       RETURNING activations_allowed, activations_used, expires_at`,
      [now, address, licenseId],
    );
  }

  private async touchActivation(
    licenseId: number,
    hwid: string,
    machine: string | null,
    user: string | null,
    address: string | null,
  ): Promise<void> {
    await this.sql.run(
      `UPDATE activations SET machine = coalesce(?, machine), "user" = coalesce(?, "user"), address = coalesce(?, address)
       WHERE license_id = ? AND hwid = ?`,
      [machine, user, address, licenseId, hwid],
    );
  }

  /**
   * Frees the machine's seat; returns the key's seats after it, or null when the machine held none
   * (a key cannot be gone while an activation of it is there: its activations go with it).
   */
  async removeActivation(licenseId: number, hwid: string): Promise<Seats | null> {
    const removed = await this.sql.run("DELETE FROM activations WHERE license_id = ? AND hwid = ?", [licenseId, hwid]);
    if (removed !== 1) return null;
    return this.sql.get<Seats>(
      `UPDATE licenses SET activations_used = CASE WHEN activations_used > 0 THEN activations_used - 1 ELSE 0 END WHERE id = ?
       RETURNING activations_allowed, activations_used, expires_at`,
      [licenseId],
    );
  }

  /**
   * Writes batched check counters: one statement for the keys and one for the machines. License
   * counters go through the licenses table, so that a key deleted since its checks were counted is
   * skipped; an activation deleted meanwhile simply matches no row.
   */
  async flushChecks(
    licenses: { id: number; checks: number; at: number; address: string | null }[],
    activations: { id: number; at: number }[],
  ): Promise<void> {
    const dialect = this.sql.dialect;
    if (licenses.length > 0) await this.sql.run(FLUSH_KEYS[dialect], [JSON.stringify(licenses)]);
    if (activations.length > 0) {
      const machines = JSON.stringify(activations);
      if (dialect === "postgres") await this.sql.run(LOCK_MACHINES, [machines]);
      await this.sql.run(FLUSH_MACHINES[dialect], [machines]);
    }
  }
}

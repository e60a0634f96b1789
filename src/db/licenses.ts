import type { Database } from "bun:sqlite";

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

/** Queries over applications, licenses and activations. */
export class LicenseStore {
  private readonly byHash;
  private readonly activationQuery;
  private readonly versionQuery;

  constructor(private readonly db: Database) {
    // No join on this hot path: in bun:sqlite a join costs several times the single-table read.
    this.byHash = db.query<LicenseRow, [string]>("SELECT * FROM licenses WHERE token_hash = ?");
    this.versionQuery = db.query<{ data_version: number }, []>("PRAGMA data_version");
    this.activationQuery = db.query<ActivationRow, [number, string]>("SELECT * FROM activations WHERE license_id = ? AND hwid = ?");
  }

  // Applications

  insertApp(name: string, supportMessage: string, now: number): number | null {
    const row = this.db
      .query<{ id: number }, [string, string, number]>(
        "INSERT INTO applications (name, support_message, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
      )
      .get(name, supportMessage, now);
    return row?.id ?? null;
  }

  app(id: number): AppRow | null {
    return this.db.query<AppRow, [number]>("SELECT * FROM applications WHERE id = ?").get(id);
  }

  appByName(name: string): AppRow | null {
    return this.db.query<AppRow, [string]>("SELECT * FROM applications WHERE name = ? COLLATE NOCASE").get(name);
  }

  apps(limit: number, offset: number): (AppRow & { licenses: number })[] {
    return this.db
      .query<AppRow & { licenses: number }, [number, number]>(
        `SELECT a.*, (SELECT count(*) FROM licenses l WHERE l.app_id = a.id) AS licenses
         FROM applications a ORDER BY a.name LIMIT ? OFFSET ?`,
      )
      .all(limit, offset);
  }

  countApps(): number {
    return this.db.query<{ n: number }, []>("SELECT count(*) AS n FROM applications").get()!.n;
  }

  /** Returns false when the new name is taken by another application. */
  updateApp(id: number, changes: { name?: string | undefined; supportMessage?: string | undefined }): boolean {
    const result = this.db
      .query(
        `UPDATE OR IGNORE applications SET name = coalesce(?, name), support_message = coalesce(?, support_message)
         WHERE id = ?`,
      )
      .run(changes.name ?? null, changes.supportMessage ?? null, id);
    return result.changes === 1;
  }

  deleteApp(id: number): boolean {
    return this.db.query("DELETE FROM applications WHERE id = ?").run(id).changes === 1;
  }

  licensesOfApp(id: number): number {
    return this.db.query<{ n: number }, [number]>("SELECT count(*) AS n FROM licenses WHERE app_id = ?").get(id)!.n;
  }

  // Licenses

  insertLicense(l: {
    appId: number;
    token: string;
    tokenHash: string;
    allowed: number;
    memo: string;
    expiresAt: number | null;
    now: number;
  }): number {
    return this.db
      .query<{ id: number }, [number, string, string, number, string, number | null, number]>(
        `INSERT INTO licenses (app_id, token, token_hash, activations_allowed, memo, expires_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`,
      )
      .get(l.appId, l.token, l.tokenHash, l.allowed, l.memo, l.expiresAt, l.now)!.id;
  }

  /** Changes whenever another connection (another process) commits to the database. */
  dataVersion(): number {
    return this.versionQuery.get()!.data_version;
  }

  byTokenHash(hash: string): LicenseRow | null {
    return this.byHash.get(hash);
  }

  license(id: number): LicenseWithApp | null {
    return this.db.query<LicenseWithApp, [number]>(`${WITH_APP} WHERE l.id = ?`).get(id);
  }

  private where(filter: LicenseFilter): { sql: string; params: (string | number)[] } {
    const clauses: string[] = [];
    const params: (string | number)[] = [];
    if (filter.appId !== undefined) (clauses.push("l.app_id = ?"), params.push(filter.appId));
    if (filter.enabled !== undefined) (clauses.push("l.enabled = ?"), params.push(filter.enabled ? 1 : 0));
    if (filter.search !== undefined && filter.search !== "") {
      const memo = "instr(lower(l.memo), lower(?)) > 0";
      if (filter.matchTokens === false) (clauses.push(memo), params.push(filter.search));
      else {
        clauses.push(`(${memo} OR l.token LIKE ? ESCAPE '\\')`);
        params.push(filter.search, filter.search.toUpperCase().replace(/[\\%_]/g, (c) => `\\${c}`) + "%");
      }
    }
    return { sql: clauses.length ? `WHERE ${clauses.join(" AND ")}` : "", params };
  }

  licenses(filter: LicenseFilter, limit: number, offset: number): LicenseWithApp[] {
    const { sql, params } = this.where(filter);
    return this.db
      .query<LicenseWithApp, (string | number)[]>(`${WITH_APP} ${sql} ORDER BY l.id DESC LIMIT ? OFFSET ?`)
      .all(...params, limit, offset);
  }

  countLicenses(filter: LicenseFilter): number {
    const { sql, params } = this.where(filter);
    return this.db.query<{ n: number }, (string | number)[]>(`SELECT count(*) AS n FROM licenses l ${sql}`).get(...params)!.n;
  }

  updateLicense(
    id: number,
    changes: {
      enabled?: boolean | undefined;
      memo?: string | undefined;
      allowed?: number | undefined;
      expiresAt?: number | null | undefined;
    },
  ): boolean {
    const result = this.db
      .query(
        `UPDATE licenses SET enabled = coalesce(?, enabled), memo = coalesce(?, memo),
           activations_allowed = coalesce(?, activations_allowed),
           expires_at = CASE WHEN ? THEN ? ELSE expires_at END
         WHERE id = ?`,
      )
      .run(
        changes.enabled === undefined ? null : changes.enabled ? 1 : 0,
        changes.memo ?? null,
        changes.allowed ?? null,
        changes.expiresAt === undefined ? 0 : 1,
        changes.expiresAt ?? null,
        id,
      );
    return result.changes === 1;
  }

  deleteLicense(id: number): boolean {
    return this.db.query("DELETE FROM licenses WHERE id = ?").run(id).changes === 1;
  }

  // Activations

  activation(licenseId: number, hwid: string): ActivationRow | null {
    return this.activationQuery.get(licenseId, hwid);
  }

  activations(licenseId: number): ActivationRow[] {
    return this.db.query<ActivationRow, [number]>("SELECT * FROM activations WHERE license_id = ? ORDER BY id").all(licenseId);
  }

  /**
   * Takes a seat: the single conditional UPDATE decides, so concurrent activations can never
   * exceed the allowance. Returns false when no seat is left.
   */
  takeSeat(licenseId: number, now: number, address: string | null): boolean {
    return (
      this.db
        .query(
          `UPDATE licenses SET activations_used = activations_used + 1, total_activations = total_activations + 1,
             last_activation_at = ?, last_activation_address = ?
           WHERE id = ? AND (activations_allowed = -1 OR activations_used < activations_allowed)`,
        )
        .run(now, address, licenseId).changes === 1
    );
  }

  /** A machine that already holds a seat activated again: counted, no seat taken. */
  recordReactivation(licenseId: number, now: number, address: string | null): void {
    this.db
      .query(
        "UPDATE licenses SET total_activations = total_activations + 1, last_activation_at = ?, last_activation_address = ? WHERE id = ?",
      )
      .run(now, address, licenseId);
  }

  insertActivation(a: {
    licenseId: number;
    hwid: string;
    machine: string | null;
    user: string | null;
    address: string | null;
    now: number;
  }): void {
    this.db
      .query("INSERT INTO activations (license_id, hwid, machine, user, address, created_at) VALUES (?, ?, ?, ?, ?, ?)")
      .run(a.licenseId, a.hwid, a.machine, a.user, a.address, a.now);
  }

  touchActivation(id: number, machine: string | null, user: string | null, address: string | null): void {
    this.db
      .query("UPDATE activations SET machine = coalesce(?, machine), user = coalesce(?, user), address = coalesce(?, address) WHERE id = ?")
      .run(machine, user, address, id);
  }

  /** Frees the machine's seat; false when it held none. */
  removeActivation(licenseId: number, hwid: string): boolean {
    const removed = this.db.query("DELETE FROM activations WHERE license_id = ? AND hwid = ?").run(licenseId, hwid).changes === 1;
    if (removed)
      this.db.query("UPDATE licenses SET activations_used = activations_used - 1 WHERE id = ? AND activations_used > 0").run(licenseId);
    return removed;
  }

  /**
   * Writes batched check counters, a statement per license and per activation. License counters
   * go through the licenses table, so that a key deleted since its checks were counted is skipped;
   * an activation deleted meanwhile simply matches no row.
   */
  flushChecks(
    licenses: { id: number; checks: number; at: number; address: string | null }[],
    activations: { id: number; at: number }[],
  ): void {
    const lic = this.db.query(
      `INSERT INTO license_checks (license_id, total, last_at, last_address) SELECT id, ?, ?, ? FROM licenses WHERE id = ?
       ON CONFLICT (license_id) DO UPDATE SET total = total + excluded.total, ` +
        "last_at = max(coalesce(last_at, 0), excluded.last_at), last_address = excluded.last_address",
    );
    const act = this.db.query("UPDATE activations SET last_check_at = max(coalesce(last_check_at, 0), ?) WHERE id = ?");
    for (const l of licenses) lic.run(l.checks, l.at, l.address, l.id);
    for (const a of activations) act.run(a.at, a.id);
  }
}

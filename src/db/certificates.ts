import type { Param, Sql } from "./sql.ts";

export type CertificateKind = "server" | "host" | "client" | "user";
export type CertificateStatus = "valid" | "revoked";
export type RootSource = "generated" | "imported";

export interface RootRow {
  id: number;
  certificate_pem: string;
  /** Null once the root is retired. */
  key_pem: string | null;
  fingerprint: string;
  source: RootSource;
  created_at: number;
  created_by: string;
  retired_at: number | null;
}

/** A root as everything but the signer sees it: without its key. */
export type PublicRootRow = Omit<RootRow, "key_pem">;

export interface CertificateRow {
  serial: string;
  ca_id: number;
  fingerprint: string;
  kind: CertificateKind;
  common_name: string;
  /** JSON array of names. */
  sans: string;
  /** JSON array of extended key usages. */
  usages: string;
  hostname: string | null;
  /** The enrolled client it was issued to (`client/csr`), revoked with the client's identity. */
  client_uuid: string | null;
  der: Uint8Array;
  not_before: number;
  not_after: number;
  status: CertificateStatus;
  revoked_at: number | null;
  revocation_reason: string | null;
  created_at: number;
  created_by: string;
}

export interface ServerCertificateRow {
  sans: string;
  serial: string;
  key_pem: string;
  updated_at: number;
  ca_id: number;
  der: Uint8Array;
  not_before: number;
  not_after: number;
  status: CertificateStatus;
}

export interface CrlRow {
  ca_id: number;
  number: number;
  der: Uint8Array;
  this_update: number;
  next_update: number;
  /** How many of the root's certificates were revoked when it was built. */
  revoked_count: number;
}

export interface RevokedEntry {
  serial: string;
  revoked_at: number;
  revocation_reason: string | null;
}

export interface HostRow {
  hostname: string;
  host_group: string | null;
  created_at: number;
  created_by: string;
  report: string | null;
  last_report_at: number | null;
  last_address: string | null;
}

/** A host with its latest valid certificate from the current root, if any. */
export interface HostWithCertificate extends HostRow {
  certificate_serial: string | null;
  certificate_not_after: number | null;
}

export interface CertificateFilter {
  kind?: CertificateKind | undefined;
  status?: CertificateStatus | undefined;
  hostname?: string | undefined;
  /** Only certificates of hosts in these groups (viewers). */
  groups?: string[] | undefined;
}

export interface HostFilter {
  group?: string | undefined;
  groups?: string[] | undefined;
  /** Hosts whose last report is at or after this time (online), or before it / never (offline). */
  reportedSince?: number | undefined;
  notReportedSince?: number | undefined;
}

const ROOT_COLUMNS = "id, certificate_pem, fingerprint, source, created_at, created_by, retired_at";
/** A host with the serial and expiry of its latest valid, unexpired certificate from the current root (one parameter: now). */
const HOST_WITH_CERTIFICATE = `SELECT h.*, s.serial AS certificate_serial, s.not_after AS certificate_not_after
  FROM hosts h LEFT JOIN certificates s ON s.serial = (
    SELECT c.serial FROM certificates c JOIN ca_roots r ON r.id = c.ca_id AND r.retired_at IS NULL
    WHERE c.hostname = h.hostname AND c.status = 'valid' AND c.not_after > ? ORDER BY c.not_after DESC LIMIT 1)`;

/**
 * The strings of a JSON array given as one parameter, as a one-column (`value`) set. On PostgreSQL
 * the parameter is typed text and then parsed: Bun.SQL sends a string bound to a jsonb parameter
 * as a JSON string (a scalar), not as the JSON text it holds.
 */
const JSON_STRINGS = {
  sqlite: "SELECT value FROM json_each(?)",
  postgres: "SELECT value FROM jsonb_array_elements_text(?::text::jsonb)",
};

/** Text sorts in byte order on both (PostgreSQL would otherwise sort by the database's locale). */
const HOST_ORDER = { sqlite: "ORDER BY h.hostname", postgres: 'ORDER BY h.hostname COLLATE "C"' };
const CERTIFICATE_ORDER = { sqlite: "ORDER BY created_at DESC, serial", postgres: 'ORDER BY created_at DESC, serial COLLATE "C"' };
const REVOKED_ORDER = { sqlite: "ORDER BY revoked_at, serial", postgres: 'ORDER BY revoked_at, serial COLLATE "C"' };
/**
 * The most recently issued first. Certificates issued in the same millisecond: in insertion order
 * on SQLite (rowid); PostgreSQL has no insertion order, so the serial decides (127 random bits).
 */
const NEWEST_ISSUED = { sqlite: "ORDER BY created_at DESC, rowid DESC", postgres: "ORDER BY created_at DESC, serial DESC" };

/**
 * Whether a root is still the current one, read in a transaction that is about to record a
 * certificate of it. On PostgreSQL the row is share-locked until the transaction ends: an import
 * retiring the root (an UPDATE of the row) waits for it, and only then revokes the root's
 * certificates, this one included. SQLite's write lock, held by the transaction, does the same.
 */
const LOCK_CURRENT_ROOT = {
  sqlite: "SELECT id FROM ca_roots WHERE id = ? AND retired_at IS NULL",
  postgres: "SELECT id FROM ca_roots WHERE id = ? AND retired_at IS NULL FOR SHARE",
};
/**
 * A host, read in a transaction that is about to record a certificate for it; as above, a removal
 * (a DELETE of the row) waits on PostgreSQL until that transaction ends, and only then revokes the
 * host's certificates. Reports (UPDATEs of other columns) do not wait for it.
 */
const LOCK_HOST = {
  sqlite: "SELECT * FROM hosts WHERE hostname = ?",
  postgres: "SELECT * FROM hosts WHERE hostname = ? FOR KEY SHARE",
};

/** Queries over the CA: roots, issued certificates, the CRL, the mTLS listener's certificate, and hosts. */
export class CertificateStore {
  constructor(private readonly sql: Sql) {}

  // Roots

  /** The current root, without its key. */
  currentRoot(): Promise<PublicRootRow | null> {
    return this.sql.get<PublicRootRow>(`SELECT ${ROOT_COLUMNS} FROM ca_roots WHERE retired_at IS NULL`);
  }

  /** The current root's key: for the signer only. */
  async currentRootKey(id: number): Promise<string | null> {
    const row = await this.sql.get<{ key_pem: string | null }>("SELECT key_pem FROM ca_roots WHERE id = ? AND retired_at IS NULL", [id]);
    return row?.key_pem ?? null;
  }

  /**
   * Stores a root as the current one unless there is a current root already (one unique index
   * allows one): its id, or null when another is current (another process stored one meanwhile).
   */
  async insertRoot(r: {
    certificatePem: string;
    keyPem: string;
    fingerprint: string;
    source: RootSource;
    createdBy: string;
    now: number;
  }): Promise<number | null> {
    const row = await this.sql.get<{ id: number }>(
      `INSERT INTO ca_roots (certificate_pem, key_pem, fingerprint, source, created_at, created_by)
       VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id`,
      [r.certificatePem, r.keyPem, r.fingerprint, r.source, r.now, r.createdBy],
    );
    return row?.id ?? null;
  }

  /** Retires the current root if it is still `id`: it stays on record, its key is erased. */
  async retireRoot(id: number, now: number): Promise<boolean> {
    return (await this.sql.run("UPDATE ca_roots SET retired_at = ?, key_pem = NULL WHERE id = ? AND retired_at IS NULL", [now, id])) === 1;
  }

  /** Whether root `id` is still the current one, holding it so until the caller's transaction ends (see LOCK_CURRENT_ROOT). */
  async holdCurrentRoot(id: number): Promise<boolean> {
    return (await this.sql.get(LOCK_CURRENT_ROOT[this.sql.dialect], [id])) !== null;
  }

  /**
   * Holds a client's certificates until the caller's transaction ends, so that of certificates
   * issued to one client at once each sees those before it (its two newest are kept). SQLite's
   * write lock already does; PostgreSQL locks the client's row.
   */
  async holdClient(uuid: string): Promise<void> {
    if (this.sql.dialect === "postgres") await this.sql.get("SELECT uuid FROM clients WHERE uuid = ? FOR UPDATE", [uuid]);
  }

  // Certificates

  /** Records an issued certificate; false when its serial or fingerprint is already taken. */
  async insertCertificate(c: Omit<CertificateRow, "status" | "revoked_at" | "revocation_reason">): Promise<boolean> {
    const changed = await this.sql.run(
      `INSERT INTO certificates (serial, ca_id, fingerprint, kind, common_name, sans, usages, hostname, client_uuid, der, not_before,
         not_after, created_at, created_by)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
      [
        c.serial,
        c.ca_id,
        c.fingerprint,
        c.kind,
        c.common_name,
        c.sans,
        c.usages,
        c.hostname,
        c.client_uuid,
        c.der,
        c.not_before,
        c.not_after,
        c.created_at,
        c.created_by,
      ],
    );
    return changed === 1;
  }

  certificate(serial: string): Promise<CertificateRow | null> {
    return this.sql.get<CertificateRow>("SELECT * FROM certificates WHERE serial = ?", [serial]);
  }

  certificateByFingerprint(fingerprint: string): Promise<CertificateRow | null> {
    return this.sql.get<CertificateRow>("SELECT * FROM certificates WHERE fingerprint = ?", [fingerprint]);
  }

  /** The certificate with this fingerprint if the current root issued it. */
  certificateOfCurrentRoot(fingerprint: string): Promise<CertificateRow | null> {
    return this.sql.get<CertificateRow>(
      "SELECT c.* FROM certificates c JOIN ca_roots r ON r.id = c.ca_id AND r.retired_at IS NULL WHERE c.fingerprint = ?",
      [fingerprint],
    );
  }

  /** Of these fingerprints, those of revoked certificates. */
  async revokedAmong(fingerprints: readonly string[]): Promise<Set<string>> {
    if (fingerprints.length === 0) return new Set();
    const rows = await this.sql.all<{ fingerprint: string }>(
      `SELECT fingerprint FROM certificates WHERE status = 'revoked' AND fingerprint IN (${JSON_STRINGS[this.sql.dialect]})`,
      [JSON.stringify(fingerprints)],
    );
    return new Set(rows.map((r) => r.fingerprint));
  }

  private certificateWhere(filter: CertificateFilter): { sql: string; params: Param[] } {
    const clauses: string[] = [];
    const params: Param[] = [];
    if (filter.kind !== undefined) (clauses.push("kind = ?"), params.push(filter.kind));
    if (filter.status !== undefined) (clauses.push("status = ?"), params.push(filter.status));
    if (filter.hostname !== undefined) (clauses.push("hostname = ?"), params.push(filter.hostname));
    if (filter.groups !== undefined) {
      clauses.push(`hostname IN (SELECT hostname FROM hosts WHERE host_group IN (${JSON_STRINGS[this.sql.dialect]}))`);
      params.push(JSON.stringify(filter.groups));
    }
    return { sql: clauses.length ? `WHERE ${clauses.join(" AND ")}` : "", params };
  }

  /** A page of certificates, newest first. */
  certificates(filter: CertificateFilter, limit: number, offset: number): Promise<CertificateRow[]> {
    const { sql, params } = this.certificateWhere(filter);
    return this.sql.all<CertificateRow>(`SELECT * FROM certificates ${sql} ${CERTIFICATE_ORDER[this.sql.dialect]} LIMIT ? OFFSET ?`, [
      ...params,
      limit,
      offset,
    ]);
  }

  async countCertificates(filter: CertificateFilter): Promise<number> {
    const { sql, params } = this.certificateWhere(filter);
    return (await this.sql.get<{ n: number }>(`SELECT count(*) AS n FROM certificates ${sql}`, params))!.n;
  }

  /** The one-time transition valid → revoked: of concurrent revocations of one certificate, exactly one changes the row. */
  async revoke(serial: string, reason: string, now: number): Promise<boolean> {
    const changed = await this.sql.run(
      "UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ? WHERE serial = ? AND status = 'valid'",
      [now, reason, serial],
    );
    return changed === 1;
  }

  /** Revokes every valid certificate of a host; the serials it revoked, with the clients they were issued to. */
  revokeOfHost(hostname: string, reason: string, now: number): Promise<{ serial: string; client_uuid: string | null }[]> {
    return this.sql.all<{ serial: string; client_uuid: string | null }>(
      `UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?
       WHERE hostname = ? AND status = 'valid' RETURNING serial, client_uuid`,
      [now, reason, hostname],
    );
  }

  /** Revokes every valid certificate issued to a client; the serials it revoked. */
  async revokeOfClient(uuid: string, reason: string, now: number): Promise<string[]> {
    const rows = await this.sql.all<{ serial: string }>(
      `UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?
       WHERE client_uuid = ? AND status = 'valid' RETURNING serial`,
      [now, reason, uuid],
    );
    return rows.map((r) => r.serial);
  }

  /** A client's valid, unexpired certificates, the most recently issued first. */
  validOfClient(uuid: string, now: number): Promise<CertificateRow[]> {
    return this.sql.all<CertificateRow>(
      `SELECT * FROM certificates WHERE client_uuid = ? AND status = 'valid' AND not_after > ? ${NEWEST_ISSUED[this.sql.dialect]}`,
      [uuid, now],
    );
  }

  /** Revokes every valid certificate of a root; the serials it revoked. */
  async revokeOfRoot(caId: number, reason: string, now: number): Promise<string[]> {
    const rows = await this.sql.all<{ serial: string }>(
      `UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?
       WHERE ca_id = ? AND status = 'valid' RETURNING serial`,
      [now, reason, caId],
    );
    return rows.map((r) => r.serial);
  }

  /** How many certificates of a root are still in use (valid and unexpired), by kind. */
  async inUseOfRoot(caId: number, now: number): Promise<Partial<Record<CertificateKind, number>>> {
    const rows = await this.sql.all<{ kind: CertificateKind; n: number }>(
      "SELECT kind, count(*) AS n FROM certificates WHERE ca_id = ? AND status = 'valid' AND not_after > ? GROUP BY kind",
      [caId, now],
    );
    return Object.fromEntries(rows.map((r) => [r.kind, r.n]));
  }

  // The CRL

  /**
   * What the next CRL of a root holds: its number (one more than any CRL so far), how many of the
   * root's certificates are revoked, and those of them that have not expired yet. The number and
   * the count are read in one statement (one snapshot, on either backend), the list after them: a
   * revocation is never undone, so the list holds every unexpired revocation counted, and a CRL
   * never claims a count whose revocations it lacks (it may list more, and is then rebuilt once for
   * nothing).
   */
  async crlContents(caId: number, now: number): Promise<{ number: number; revokedCount: number; revoked: RevokedEntry[] }> {
    const head = (await this.sql.get<{ number: number; revoked_count: number }>(
      `SELECT (SELECT coalesce(max(number), 0) + 1 FROM ca_crls) AS number,
              (SELECT count(*) FROM certificates WHERE ca_id = ? AND status = 'revoked') AS revoked_count`,
      [caId],
    ))!;
    const revoked = await this.sql.all<RevokedEntry>(
      `SELECT serial, revoked_at, revocation_reason FROM certificates
       WHERE ca_id = ? AND status = 'revoked' AND not_after > ? ${REVOKED_ORDER[this.sql.dialect]}`,
      [caId, now],
    );
    return { number: head.number, revokedCount: head.revoked_count, revoked };
  }

  /** How many of a root's certificates are revoked (expired ones included): it only grows. */
  async revokedCount(caId: number): Promise<number> {
    return (await this.sql.get<{ n: number }>("SELECT count(*) AS n FROM certificates WHERE ca_id = ? AND status = 'revoked'", [caId]))!.n;
  }

  crl(caId: number): Promise<CrlRow | null> {
    return this.sql.get<CrlRow>("SELECT * FROM ca_crls WHERE ca_id = ?", [caId]);
  }

  /**
   * Stores a root's CRL unless one with the same or a higher number is already there (another
   * process built it meanwhile): false then, and the caller builds again from fresh contents.
   */
  async saveCrl(c: CrlRow): Promise<boolean> {
    const changed = await this.sql.run(
      `INSERT INTO ca_crls (ca_id, number, der, this_update, next_update, revoked_count) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (ca_id) DO UPDATE SET number = excluded.number, der = excluded.der, this_update = excluded.this_update,
         next_update = excluded.next_update, revoked_count = excluded.revoked_count
       WHERE excluded.number > ca_crls.number`,
      [c.ca_id, c.number, c.der, c.this_update, c.next_update, c.revoked_count],
    );
    return changed === 1;
  }

  // The mTLS listener's certificate

  serverCertificate(sans: string): Promise<ServerCertificateRow | null> {
    return this.sql.get<ServerCertificateRow>(
      `SELECT s.*, c.ca_id, c.der, c.not_before, c.not_after, c.status
       FROM ca_server_certificates s JOIN certificates c ON c.serial = s.serial WHERE s.sans = ?`,
      [sans],
    );
  }

  /**
   * Stores the listener's certificate for these names in place of `replacing` (the serial stored
   * before, or null when there was none): one conditional statement, false when another process
   * stored one meanwhile (theirs stands).
   */
  async saveServerCertificate(sans: string, serial: string, keyPem: string, now: number, replacing: string | null): Promise<boolean> {
    const changed =
      replacing === null
        ? await this.sql.run(
            "INSERT INTO ca_server_certificates (sans, serial, key_pem, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [sans, serial, keyPem, now],
          )
        : await this.sql.run("UPDATE ca_server_certificates SET serial = ?, key_pem = ?, updated_at = ? WHERE sans = ? AND serial = ?", [
            serial,
            keyPem,
            now,
            sans,
            replacing,
          ]);
    return changed === 1;
  }

  // Hosts

  /** False when the hostname is already registered. */
  async insertHost(h: { hostname: string; group: string | null; createdBy: string; now: number }): Promise<boolean> {
    const changed = await this.sql.run(
      "INSERT INTO hosts (hostname, host_group, created_at, created_by) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
      [h.hostname, h.group, h.now, h.createdBy],
    );
    return changed === 1;
  }

  /** Every registered hostname with its group (the mTLS listener keeps them in memory). */
  async hostGroups(): Promise<Map<string, string | null>> {
    const rows = await this.sql.all<{ hostname: string; host_group: string | null }>("SELECT hostname, host_group FROM hosts");
    return new Map(rows.map((r) => [r.hostname, r.host_group]));
  }

  /** A host as stored, without its certificate. */
  hostRow(hostname: string): Promise<HostRow | null> {
    return this.sql.get<HostRow>("SELECT * FROM hosts WHERE hostname = ?", [hostname]);
  }

  /** A host, held so until the caller's transaction ends (see LOCK_HOST). */
  holdHost(hostname: string): Promise<HostRow | null> {
    return this.sql.get<HostRow>(LOCK_HOST[this.sql.dialect], [hostname]);
  }

  host(hostname: string, now: number): Promise<HostWithCertificate | null> {
    return this.sql.get<HostWithCertificate>(`${HOST_WITH_CERTIFICATE} WHERE h.hostname = ?`, [now, hostname]);
  }

  private hostWhere(filter: HostFilter): { sql: string; params: Param[] } {
    const clauses: string[] = [];
    const params: Param[] = [];
    if (filter.group !== undefined) (clauses.push("h.host_group = ?"), params.push(filter.group));
    if (filter.groups !== undefined) {
      clauses.push(`h.host_group IN (${JSON_STRINGS[this.sql.dialect]})`);
      params.push(JSON.stringify(filter.groups));
    }
    if (filter.reportedSince !== undefined) (clauses.push("h.last_report_at >= ?"), params.push(filter.reportedSince));
    if (filter.notReportedSince !== undefined) {
      clauses.push("(h.last_report_at IS NULL OR h.last_report_at < ?)");
      params.push(filter.notReportedSince);
    }
    return { sql: clauses.length ? `WHERE ${clauses.join(" AND ")}` : "", params };
  }

  hosts(filter: HostFilter, now: number, limit: number, offset: number): Promise<HostWithCertificate[]> {
    const { sql, params } = this.hostWhere(filter);
    return this.sql.all<HostWithCertificate>(`${HOST_WITH_CERTIFICATE} ${sql} ${HOST_ORDER[this.sql.dialect]} LIMIT ? OFFSET ?`, [
      now,
      ...params,
      limit,
      offset,
    ]);
  }

  async countHosts(filter: HostFilter): Promise<number> {
    const { sql, params } = this.hostWhere(filter);
    return (await this.sql.get<{ n: number }>(`SELECT count(*) AS n FROM hosts h ${sql}`, params))!.n;
  }

  async deleteHost(hostname: string): Promise<boolean> {
    return (await this.sql.run("DELETE FROM hosts WHERE hostname = ?", [hostname])) === 1;
  }

  /** Stores a host's latest report; false when the host is not registered. */
  async recordReport(hostname: string, report: string, address: string | null, now: number): Promise<boolean> {
    const changed = await this.sql.run("UPDATE hosts SET report = ?, last_report_at = ?, last_address = ? WHERE hostname = ?", [
      report,
      now,
      address,
      hostname,
    ]);
    return changed === 1;
  }
}

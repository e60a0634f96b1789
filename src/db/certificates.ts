import type { Database } from "bun:sqlite";

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

type Params = (string | number)[];

/** Queries over the CA: roots, issued certificates, the CRL, the mTLS listener's certificate, and hosts. */
export class CertificateStore {
  private readonly currentRootQuery;
  private readonly bySerial;

  constructor(private readonly db: Database) {
    this.currentRootQuery = db.query<PublicRootRow, []>(`SELECT ${ROOT_COLUMNS} FROM ca_roots WHERE retired_at IS NULL`);
    this.bySerial = db.query<CertificateRow, [string]>("SELECT * FROM certificates WHERE serial = ?");
  }

  // Roots

  /** The current root, without its key. */
  currentRoot(): PublicRootRow | null {
    return this.currentRootQuery.get();
  }

  /** The current root's key: for the signer only. */
  currentRootKey(id: number): string | null {
    return (
      this.db.query<{ key_pem: string | null }, [number]>("SELECT key_pem FROM ca_roots WHERE id = ? AND retired_at IS NULL").get(id)
        ?.key_pem ?? null
    );
  }

  insertRoot(r: {
    certificatePem: string;
    keyPem: string;
    fingerprint: string;
    source: RootSource;
    createdBy: string;
    now: number;
  }): number {
    return this.db
      .query<{ id: number }, [string, string, string, RootSource, number, string]>(
        `INSERT INTO ca_roots (certificate_pem, key_pem, fingerprint, source, created_at, created_by)
         VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
      )
      .get(r.certificatePem, r.keyPem, r.fingerprint, r.source, r.now, r.createdBy)!.id;
  }

  /** Retires the current root if it is still `id`: it stays on record, its key is erased. */
  retireRoot(id: number, now: number): boolean {
    return (
      this.db.query("UPDATE ca_roots SET retired_at = ?, key_pem = NULL WHERE id = ? AND retired_at IS NULL").run(now, id).changes === 1
    );
  }

  // Certificates

  /** Records an issued certificate; false when its serial or fingerprint is already taken. */
  insertCertificate(c: Omit<CertificateRow, "status" | "revoked_at" | "revocation_reason">): boolean {
    return (
      this.db
        .query(
          `INSERT INTO certificates (serial, ca_id, fingerprint, kind, common_name, sans, usages, hostname, client_uuid, der, not_before,
             not_after, created_at, created_by)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
        )
        .run(
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
        ).changes === 1
    );
  }

  certificate(serial: string): CertificateRow | null {
    return this.bySerial.get(serial);
  }

  certificateByFingerprint(fingerprint: string): CertificateRow | null {
    return this.db.query<CertificateRow, [string]>("SELECT * FROM certificates WHERE fingerprint = ?").get(fingerprint);
  }

  private certificateWhere(filter: CertificateFilter): { sql: string; params: Params } {
    const clauses: string[] = [];
    const params: Params = [];
    if (filter.kind !== undefined) (clauses.push("kind = ?"), params.push(filter.kind));
    if (filter.status !== undefined) (clauses.push("status = ?"), params.push(filter.status));
    if (filter.hostname !== undefined) (clauses.push("hostname = ?"), params.push(filter.hostname));
    if (filter.groups !== undefined) {
      clauses.push("hostname IN (SELECT hostname FROM hosts WHERE host_group IN (SELECT value FROM json_each(?)))");
      params.push(JSON.stringify(filter.groups));
    }
    return { sql: clauses.length ? `WHERE ${clauses.join(" AND ")}` : "", params };
  }

  /** A page of certificates, newest first. */
  certificates(filter: CertificateFilter, limit: number, offset: number): CertificateRow[] {
    const { sql, params } = this.certificateWhere(filter);
    return this.db
      .query<CertificateRow, Params>(`SELECT * FROM certificates ${sql} ORDER BY created_at DESC, serial LIMIT ? OFFSET ?`)
      .all(...params, limit, offset);
  }

  countCertificates(filter: CertificateFilter): number {
    const { sql, params } = this.certificateWhere(filter);
    return this.db.query<{ n: number }, Params>(`SELECT count(*) AS n FROM certificates ${sql}`).get(...params)!.n;
  }

  /** The one-time transition valid → revoked: of concurrent revocations of one certificate, exactly one changes the row. */
  revoke(serial: string, reason: string, now: number): boolean {
    return (
      this.db
        .query("UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ? WHERE serial = ? AND status = 'valid'")
        .run(now, reason, serial).changes === 1
    );
  }

  /** Revokes every valid certificate of a host; the serials it revoked, with the clients they were issued to. */
  revokeOfHost(hostname: string, reason: string, now: number): { serial: string; client_uuid: string | null }[] {
    return this.db
      .query<{ serial: string; client_uuid: string | null }, [number, string, string]>(
        `UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?
         WHERE hostname = ? AND status = 'valid' RETURNING serial, client_uuid`,
      )
      .all(now, reason, hostname);
  }

  /** Revokes every valid certificate issued to a client; the serials it revoked. */
  revokeOfClient(uuid: string, reason: string, now: number): string[] {
    return this.db
      .query<{ serial: string }, [number, string, string]>(
        `UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?
         WHERE client_uuid = ? AND status = 'valid' RETURNING serial`,
      )
      .all(now, reason, uuid)
      .map((r) => r.serial);
  }

  /** A client's valid, unexpired certificates, the most recently issued first. */
  validOfClient(uuid: string, now: number): CertificateRow[] {
    return this.db
      .query<CertificateRow, [string, number]>(
        "SELECT * FROM certificates WHERE client_uuid = ? AND status = 'valid' AND not_after > ? ORDER BY rowid DESC",
      )
      .all(uuid, now);
  }

  /** Revokes every valid certificate of a root; the serials it revoked. */
  revokeOfRoot(caId: number, reason: string, now: number): string[] {
    return this.db
      .query<{ serial: string }, [number, string, number]>(
        `UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?
         WHERE ca_id = ? AND status = 'valid' RETURNING serial`,
      )
      .all(now, reason, caId)
      .map((r) => r.serial);
  }

  /** How many certificates of a root are still in use (valid and unexpired), by kind. */
  inUseOfRoot(caId: number, now: number): Partial<Record<CertificateKind, number>> {
    const rows = this.db
      .query<{ kind: CertificateKind; n: number }, [number, number]>(
        "SELECT kind, count(*) AS n FROM certificates WHERE ca_id = ? AND status = 'valid' AND not_after > ? GROUP BY kind",
      )
      .all(caId, now);
    return Object.fromEntries(rows.map((r) => [r.kind, r.n]));
  }

  // The CRL

  /**
   * What the next CRL of a root holds, read in one transaction: its number (one more than any CRL
   * so far) and the root's revoked certificates that have not expired yet.
   */
  crlContents(caId: number, now: number): { number: number; revokedCount: number; revoked: RevokedEntry[] } {
    return this.db.transaction(() => ({
      number: this.db.query<{ n: number }, []>("SELECT coalesce(max(number), 0) + 1 AS n FROM ca_crls").get()!.n,
      revokedCount: this.revokedCount(caId),
      revoked: this.db
        .query<RevokedEntry, [number, number]>(
          `SELECT serial, revoked_at, revocation_reason FROM certificates
           WHERE ca_id = ? AND status = 'revoked' AND not_after > ? ORDER BY revoked_at, serial`,
        )
        .all(caId, now),
    }))();
  }

  /** How many of a root's certificates are revoked (expired ones included): it only grows. */
  revokedCount(caId: number): number {
    return this.db
      .query<{ n: number }, [number]>("SELECT count(*) AS n FROM certificates WHERE ca_id = ? AND status = 'revoked'")
      .get(caId)!.n;
  }

  crl(caId: number): CrlRow | null {
    return this.db.query<CrlRow, [number]>("SELECT * FROM ca_crls WHERE ca_id = ?").get(caId);
  }

  /**
   * Stores a root's CRL unless one with the same or a higher number is already there (another
   * process built it meanwhile): false then, and the caller builds again from fresh contents.
   */
  saveCrl(c: CrlRow): boolean {
    return (
      this.db
        .query(
          `INSERT INTO ca_crls (ca_id, number, der, this_update, next_update, revoked_count) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (ca_id) DO UPDATE SET number = excluded.number, der = excluded.der, this_update = excluded.this_update,
             next_update = excluded.next_update, revoked_count = excluded.revoked_count
           WHERE excluded.number > ca_crls.number`,
        )
        .run(c.ca_id, c.number, c.der, c.this_update, c.next_update, c.revoked_count).changes === 1
    );
  }

  // The mTLS listener's certificate

  serverCertificate(sans: string): ServerCertificateRow | null {
    return this.db
      .query<ServerCertificateRow, [string]>(
        `SELECT s.*, c.ca_id, c.der, c.not_before, c.not_after, c.status
         FROM ca_server_certificates s JOIN certificates c ON c.serial = s.serial WHERE s.sans = ?`,
      )
      .get(sans);
  }

  saveServerCertificate(sans: string, serial: string, keyPem: string, now: number): void {
    this.db
      .query(
        `INSERT INTO ca_server_certificates (sans, serial, key_pem, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (sans) DO UPDATE SET serial = excluded.serial, key_pem = excluded.key_pem, updated_at = excluded.updated_at`,
      )
      .run(sans, serial, keyPem, now);
  }

  // Hosts

  /** False when the hostname is already registered. */
  insertHost(h: { hostname: string; group: string | null; createdBy: string; now: number }): boolean {
    return (
      this.db
        .query("INSERT INTO hosts (hostname, host_group, created_at, created_by) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
        .run(h.hostname, h.group, h.now, h.createdBy).changes === 1
    );
  }

  /** Every registered hostname with its group (the mTLS listener keeps them in memory). */
  hostGroups(): Map<string, string | null> {
    return new Map(
      this.db
        .query<{ hostname: string; host_group: string | null }, []>("SELECT hostname, host_group FROM hosts")
        .all()
        .map((r) => [r.hostname, r.host_group]),
    );
  }

  /** Changes whenever another connection (another process) commits to the database. */
  dataVersion(): number {
    return this.db.query<{ data_version: number }, []>("PRAGMA data_version").get()!.data_version;
  }

  /** A host as stored, without its certificate. */
  hostRow(hostname: string): HostRow | null {
    return this.db.query<HostRow, [string]>("SELECT * FROM hosts WHERE hostname = ?").get(hostname);
  }

  host(hostname: string, now: number): HostWithCertificate | null {
    return this.db.query<HostWithCertificate, [number, string]>(`${HOST_WITH_CERTIFICATE} WHERE h.hostname = ?`).get(now, hostname);
  }

  private hostWhere(filter: HostFilter): { sql: string; params: Params } {
    const clauses: string[] = [];
    const params: Params = [];
    if (filter.group !== undefined) (clauses.push("h.host_group = ?"), params.push(filter.group));
    if (filter.groups !== undefined)
      (clauses.push("h.host_group IN (SELECT value FROM json_each(?))"), params.push(JSON.stringify(filter.groups)));
    if (filter.reportedSince !== undefined) (clauses.push("h.last_report_at >= ?"), params.push(filter.reportedSince));
    if (filter.notReportedSince !== undefined) {
      clauses.push("(h.last_report_at IS NULL OR h.last_report_at < ?)");
      params.push(filter.notReportedSince);
    }
    return { sql: clauses.length ? `WHERE ${clauses.join(" AND ")}` : "", params };
  }

  hosts(filter: HostFilter, now: number, limit: number, offset: number): HostWithCertificate[] {
    const { sql, params } = this.hostWhere(filter);
    return this.db
      .query<HostWithCertificate, Params>(`${HOST_WITH_CERTIFICATE} ${sql} ORDER BY h.hostname LIMIT ? OFFSET ?`)
      .all(now, ...params, limit, offset);
  }

  countHosts(filter: HostFilter): number {
    const { sql, params } = this.hostWhere(filter);
    return this.db.query<{ n: number }, Params>(`SELECT count(*) AS n FROM hosts h ${sql}`).get(...params)!.n;
  }

  deleteHost(hostname: string): boolean {
    return this.db.query("DELETE FROM hosts WHERE hostname = ?").run(hostname).changes === 1;
  }

  /** Stores a host's latest report; false when the host is not registered. */
  recordReport(hostname: string, report: string, address: string | null, now: number): boolean {
    return (
      this.db
        .query("UPDATE hosts SET report = ?, last_report_at = ?, last_address = ? WHERE hostname = ?")
        .run(report, now, address, hostname).changes === 1
    );
  }
}
